"""The shell scripts parse, and docs/results/run.sh stops when one of its
background runs fails (a bare `wait` would have carried on and exited 0)."""

import glob
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(ROOT, 'launch', '*.sh')) +
                 glob.glob(os.path.join(ROOT, 'launch', '*.sbatch')) +
                 [os.path.join(ROOT, 'docs', 'results', 'run.sh')])


def test_scripts_were_found():
  assert len(SCRIPTS) >= 5, SCRIPTS


@pytest.mark.parametrize('script', SCRIPTS, ids=os.path.basename)
def test_script_parses(script):
  run = subprocess.run(['bash', '-n', script], capture_output=True, text=True, timeout=60)
  assert run.returncode == 0, run.stderr


def fake_tools(tmp_path):
  """Stand-ins on PATH: `python` records each call in tmp_path/calls and
  writes the files the real command would (a 3-step run's config and
  metrics, other files empty), but token_drop's training fails while
  tmp_path/fail exists and sctd's stops at step 2 (exit 0, as after
  SIGTERM) while tmp_path/stop exists; `python -c` runs Python; `taskset -c CORE CMD...` records CORE in
  tmp_path/cores and runs CMD. Returns the environment that puts them first."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  fake = bin_dir / 'python'
  fake.write_text(f"""#!/usr/bin/env bash
case $1 in -c) exec {sys.executable} "$@";; esac
echo "$*" >> {tmp_path}/calls
echo "$GLIBC_TUNABLES" >> {tmp_path}/tunables
case "$*" in *--config.method=token_drop*) if [ -f {tmp_path}/fail ]; then exit 3; fi;; esac
for arg in "$@"; do
  case ${{prev:-}} in --workdir|--out) out=$arg;; esac; prev=$arg
done
step=3
case "$*" in *--config.method=sctd*) if [ -f {tmp_path}/stop ]; then step=2; fi;; esac
case "$*" in
  *sctd_jax.train*) mkdir -p "$out"; echo '{{"train": {{"num_steps": 3}}}}' > "$out/config.json"
    echo '{{"step": 2}}' > "$out/metrics.jsonl"; echo '{{"step": '$step'}}' >> "$out/metrics.jsonl";;
  *evals.probe*) mkdir -p "$out"; echo {{}} > "$out/probe.json";;
  *evals.finetune*) mkdir -p "$out"; echo {{}} > "$out/eval_results.json";;
esac
""")
  fake.chmod(0o755)
  taskset = bin_dir / 'taskset'
  taskset.write_text('#!/usr/bin/env bash\n'
                     f'echo "$2" >> {tmp_path}/cores\n'
                     'shift 2; exec "$@"\n')
  taskset.chmod(0o755)
  env = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  return dict(env, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}',
              SEEDS='0 1', VARIANTS='baseline token_drop sctd', JOBS='2',
              RECORDS=str(tmp_path / 'records'))


def run_experiment(tmp_path, env):
  return subprocess.run(['bash', os.path.join(ROOT, 'docs', 'results', 'run.sh'),
                         str(tmp_path / 'runs')], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize('pin', ['0', '1'])
def test_experiment_script_fails_when_a_training_run_fails(tmp_path, pin):
  (tmp_path / 'fail').touch()
  env = dict(fake_tools(tmp_path), PIN=pin,
             TRAIN_ARGS='--config.train.num_steps=7 --config.train.eval_every=7')
  run = run_experiment(tmp_path, env)
  assert run.returncode != 0
  for seed in (0, 1):
    assert (f'error: seed {seed} token_drop failed; see {tmp_path}/runs/seed{seed}/'
            'token_drop.log') in run.stderr, run.stderr
  calls = (tmp_path / 'calls').read_text().splitlines()
  assert sum('sctd_jax.train' in c for c in calls) == 6
  # TRAIN_ARGS reach every pretraining run, and only those.
  assert all(c.endswith('--config.train.num_steps=7 --config.train.eval_every=7')
             == ('sctd_jax.train' in c) for c in calls)
  # The failed runs are not evaluated, the others are; nothing is compared.
  evaluated = {c.split('--init ')[1].split()[0] for c in calls if 'evals.probe' in c}
  assert evaluated == {f'{tmp_path}/runs/seed{s}/{v}' for s in (0, 1)
                       for v in ('baseline', 'sctd')}
  assert not any('evals.seeds' in c for c in calls)
  # Pinned, every command ran on one of the JOBS slots' cores.
  cores = (tmp_path / 'cores').read_text().split() if pin == '1' else []
  assert (set(cores) == {'0', '1'}) == (pin == '1'), cores


def test_experiment_script_keeps_records_and_skips_recorded_runs(tmp_path):
  env = fake_tools(tmp_path)
  (tmp_path / 'fail').touch()
  assert run_experiment(tmp_path, env).returncode != 0
  records = tmp_path / 'records'
  # Only finished runs have a record, and it holds what evals.seeds reads
  # (time.txt from /usr/bin/time: one line per timed command).
  assert sorted(p.relative_to(records).as_posix() for p in records.glob('*/*')) == [
      'seed0/baseline', 'seed0/sctd', 'seed1/baseline', 'seed1/sctd']
  files = sorted(p.relative_to(records / 'seed1' / 'sctd').as_posix()
                 for p in (records / 'seed1' / 'sctd').rglob('*') if p.is_file())
  assert files == ['config.json', 'finetune/paraphrase/eval_results.json',
                   'finetune/subj_num/eval_results.json',
                   'finetune/tense/eval_results.json', 'machine.txt',
                   'metrics.jsonl', 'probe/probe.json', 'time.txt']
  assert f'{len(os.sched_getaffinity(0))} cores' in (records / 'seed1' / 'sctd' / 'machine.txt').read_text()
  assert len((records / 'seed1' / 'sctd' / 'time.txt').read_text().splitlines()) == 5
  # The runs' machine is lost; the rerun trains only what has no record and
  # compares the records.
  shutil.rmtree(tmp_path / 'runs')
  (tmp_path / 'fail').unlink()
  (tmp_path / 'calls').unlink()
  run = run_experiment(tmp_path, env)
  assert run.returncode == 0, run.stderr
  calls = (tmp_path / 'calls').read_text().splitlines()
  trained = {c.split('--workdir ')[1].split()[0] for c in calls if 'sctd_jax.train' in c}
  assert trained == {f'{tmp_path}/runs/seed{s}/token_drop' for s in (0, 1)}
  assert (records / 'seed0' / 'token_drop' / 'probe' / 'probe.json').is_file()
  assert [c.split()[2] for c in calls if 'evals.seeds' in c] == [str(records)]
  # Every command maps large buffers in huge pages.
  assert set((tmp_path / 'tunables').read_text().split()) == {'glibc.malloc.hugetlb=1'}


def test_experiment_script_evaluates_and_records_only_finished_runs(tmp_path):
  """Training stopped by SIGTERM exits 0 after saving; such a run is named
  in the log and failed.txt, not probed, fine-tuned or recorded."""
  env = dict(fake_tools(tmp_path), SEEDS='0')
  (tmp_path / 'stop').touch()
  run = run_experiment(tmp_path, env)
  assert run.returncode != 0
  assert 'error: seed 0 sctd failed' in run.stderr, run.stderr
  log = (tmp_path / 'runs' / 'seed0' / 'sctd.log').read_text()
  assert f'{tmp_path}/runs/seed0/sctd stopped at step 2 of 3; rerun to resume' in log
  calls = (tmp_path / 'calls').read_text().splitlines()
  assert not any('evals' in c and '/sctd' in c for c in calls)
  assert sorted(p.name for p in (tmp_path / 'records' / 'seed0').iterdir()) == [
      'baseline', 'token_drop']
