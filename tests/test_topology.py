"""Resume on another topology: a checkpoint written on 8 devices with
data=4, fsdp=2 continues on 2 devices with data=2 at the same data position,
with the losses of the run that never moved (2 processes -> 1 is in
tests/test_preemption.py)."""

import os
import shutil

from test_preemption import assert_same_losses, one_process, rows

STEPS, SAVED = 8, 4
EXTRA = [f'--config.train.num_steps={STEPS}', f'--config.train.checkpoint_every={SAVED}']


def test_resume_from_8_devices_data4_fsdp2_on_2_devices_data2(tmp_path):
  reference, moved = tmp_path / 'reference', tmp_path / 'moved'
  run = one_process(reference, 8, *EXTRA, '--config.mesh.data=4', '--config.mesh.fsdp=2')
  assert run.returncode == 0, run.stderr[-3000:]
  assert sorted(os.listdir(reference / 'checkpoints')) == [str(SAVED), str(STEPS)]
  shutil.copytree(reference, moved)
  shutil.rmtree(moved / 'checkpoints' / str(STEPS))   # as if stopped at SAVED

  run = one_process(moved, 2, *EXTRA, '--config.mesh.data=2', '--config.mesh.fsdp=1')
  assert run.returncode == 0, run.stderr[-3000:]
  assert f'resuming at step {SAVED}' in run.stderr
  got, want = rows(moved), rows(reference)
  assert sorted(got) == list(range(1, STEPS + 1))
  # Other batches (a wrong data position) would change the loss far more.
  assert_same_losses(got, want, range(SAVED + 1, STEPS + 1))
