"""sctd_jax.faults in one process: the skip of a non-finite step inside the
compiled step, skip counting, disk-full and out-of-memory messages from real
errors (a full tmpfs, an impossible allocation), the memory check."""

import errno
import functools
import os
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sctd_jax import config as config_lib
from sctd_jax import faults
from sctd_jax import metrics_log
from sctd_jax import step as step_lib
from sctd_jax import token_drop
from conftest import CLS, MASK, PAD, SEP, make_model, random_batch, tiny_config


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def _bits_equal(a, b) -> bool:
  """Every leaf identical bit for bit (NaN == NaN, -0.0 != 0.0)."""
  same = jax.tree.map(lambda x, y: x.dtype == y.dtype and x.shape == y.shape
                      and x.tobytes() == y.tobytes(), a, b)
  return all(jax.tree.leaves(same))


def _poisoned(config, seed):
  batch = random_batch(config, seed=seed)
  batch['mlm_weights'][0, 0] = np.nan  # Loss and gradients become NaN.
  return batch


@functools.cache
def _run(on_nonfinite):
  """Host copies of the states before and after each of three steps: a
  clean batch, a poisoned one, a clean one; their metrics; the step."""
  config = tiny_config(**{'method': 'token_drop', 'train.on_nonfinite': on_nonfinite})
  model = make_model(config)
  importance = token_drop.init_importance(config.model.vocab_size, [CLS, SEP, MASK], [PAD])
  state = step_lib.create_train_state(config, model, importance, jax.random.PRNGKey(0))
  train_step = step_lib.make_train_step(model, config)
  states, metrics = [_host(state)], []
  for batch in [random_batch(config, 0), _poisoned(config, 1), random_batch(config, 2)]:
    state, m = train_step(state, batch)
    states.append(_host(state))
    metrics.append(_host(m))
  return states, metrics, train_step


def _same_training_state(a, b) -> bool:
  return all(_bits_equal(getattr(a, f), getattr(b, f))
             for f in ('step', 'params', 'opt_state', 'importance', 'rng'))


def test_skip_leaves_the_state_bit_identical_across_a_poisoned_batch():
  states, metrics, train_step = _run('skip')
  before, after = states[1], states[2]
  assert not np.isfinite(metrics[1]['loss']) and bool(metrics[1]['skipped'])
  for field in ('params', 'opt_state', 'importance', 'rng'):
    assert _bits_equal(getattr(before, field), getattr(after, field)), field
  assert int(after.step) == int(before.step) + 1
  # Training goes on from there, in the same compiled program.
  assert not bool(metrics[2]['skipped']) and np.isfinite(metrics[2]['loss'])
  assert not _bits_equal(states[3].params, after.params)
  assert train_step._cache_size() == 1


def test_stop_applies_the_poisoned_step_and_skip_changes_no_clean_step():
  skipped, _, _ = _run('skip')
  stopped, stop_metrics, _ = _run('stop')
  assert _same_training_state(skipped[1], stopped[1])  # The clean first step.
  assert not any(bool(m['skipped']) for m in stop_metrics)
  assert not np.isfinite(jax.tree.leaves(stopped[2].params)[0]).all()
  assert not _bits_equal(stopped[1].importance, stopped[2].importance)


def _step_metrics(loss, skipped, mlm_drop=None):
  return dict(loss=loss, grad_norm=2 * loss, learning_rate=1e-3, sctd_step=False,
              skipped=skipped, mlm_drop=loss if mlm_drop is None else mlm_drop,
              mlm_full=np.nan, kl_global=np.nan, kl_local=np.nan)


def test_rows_average_only_the_steps_not_skipped():
  row = metrics_log.summarize(
      7, [_step_metrics(1.0, False), _step_metrics(np.nan, True),
          _step_metrics(np.inf, True), _step_metrics(2.0, False)], 4.0, 10)
  assert row['skipped_steps'] == 2
  assert row['loss'] == 1.5 and row['grad_norm'] == 3.0 and row['mlm_drop'] == 1.5
  assert row['mlm_full'] is None
  all_skipped = metrics_log.summarize(8, [_step_metrics(np.nan, True)], 1.0, 10)
  assert all_skipped['loss'] is None and all_skipped['skipped_steps'] == 1


def test_skip_counter_stops_after_max_consecutive_skips_across_rows():
  counter = faults.SkipCounter(3)
  counter.update(4, [False, True, True, False])    # steps 1-4: a run of 2
  counter.update(6, [True, True])                   # steps 5-6: a run of 2
  with pytest.raises(metrics_log.NonFiniteLoss, match=r'3 consecutive steps \(up to step 7\)'):
    counter.update(8, [True, False])                # step 7 is the third


@pytest.fixture
def tmpfs(tmp_path):
  """A 256 KB filesystem that really fills; needs root to mount."""
  path = tmp_path / 'disk'
  path.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=256k', 'tmpfs',
                     str(path)], capture_output=True).returncode:
    pytest.skip('mounting a tmpfs needs root')
  try:
    yield path
  finally:
    subprocess.run(['umount', '-l', str(path)], check=True)


def test_full_disk_is_one_line_and_keeps_complete_checkpoints(tmpfs):
  directory = tmpfs / 'checkpoints'
  for name in ('5', '10', '15.orbax-checkpoint-tmp-123'):
    (directory / name).mkdir(parents=True)
    (directory / name / 'data').write_bytes(b'x' * 40_000)
  with pytest.raises(faults.DiskFull) as raised:
    with faults.Guard(tiny_config(), str(directory)) as guard:
      guard.state_size = 50_000
      with open(directory / 'metrics.bin', 'wb') as f:
        while True:  # Until the disk is really full.
          f.write(b'y' * 65536)
          f.flush()
          os.fsync(f.fileno())
  message = str(raised.value)
  assert '\n' not in message
  assert f'the newest complete checkpoint is {directory}/10' in message
  assert 'resume from step 10' in message
  # The state's 50,000 bytes (more than checkpoint 10's files); the space the
  # partial save held is free again.
  free_kb = shutil.disk_usage(directory).free / 1024
  assert free_kb >= 39
  assert f'needs about 48.8 KB and {free_kb:.1f} KB is free' in message
  assert sorted(os.listdir(directory)) == ['10', '5', 'metrics.bin']
  assert (directory / '10' / 'data').read_bytes() == b'x' * 40_000


def test_disk_full_is_recognised_from_python_and_tensorstore_errors():
  assert faults.is_disk_full(OSError(errno.ENOSPC, 'No space left on device'))
  wrapped = ValueError("RESOURCE_EXHAUSTED: Failed to write 19504 bytes to file 18: "
                       "No space left on device [os_error_code='28']")
  try:
    try:
      raise wrapped
    except ValueError:
      raise RuntimeError('cleanup failed too')
  except RuntimeError as e:
    assert faults.is_disk_full(e)
  assert not faults.is_disk_full(ValueError('RESOURCE_EXHAUSTED: out of memory'))


def test_impossible_allocation_is_one_out_of_memory_line():
  config = tiny_config()
  with pytest.raises(faults.OutOfMemory) as raised:
    with faults.Guard(config, '/nonexistent') as guard:
      guard.memory_estimate = 3 * 2**20
      jnp.ones((2**45,), jnp.float32).block_until_ready()  # 128 TB
  message = str(raised.value)
  assert '\n' not in message and 'about 3.0 MB per device' in message
  for knob in ('train.grad_accum_steps=2', 'model.remat=True',
               'a smaller train.batch_size (now 4)'):
    assert knob in message, message


def test_memory_check_compares_the_compiled_step_with_the_device(monkeypatch):
  x = jax.ShapeDtypeStruct((256, 512), jnp.float32)
  compiled = jax.jit(lambda a: jnp.tanh(a @ a.T)).lower(x).compile()
  estimate = faults.memory_estimate(compiled)
  # At least the argument and the 256x256 result, both float32.
  assert estimate >= 4 * (256 * 512 + 256 * 256)
  config = tiny_config(**{'model.remat': True})
  monkeypatch.setenv(faults.DEVICE_MEMORY_ENV, str(estimate - 1))
  with pytest.raises(faults.OutOfMemory, match='but a device holds') as raised:
    faults.check_memory(compiled, config)
  assert 'model.remat' not in str(raised.value)  # Already on.
  monkeypatch.setenv(faults.DEVICE_MEMORY_ENV, str(estimate))
  assert faults.check_memory(compiled, config) == estimate


@pytest.mark.parametrize('key, value', [('train.on_nonfinite', 'ignore'),
                                        ('train.max_skipped', 0),
                                        ('train.step_timeout_s', -1.0)])
def test_fault_keys_are_validated_by_name(key, value):
  with pytest.raises(config_lib.ConfigError, match=f'config key {key}='):
    config_lib.validate(tiny_config(**{key: value}))
