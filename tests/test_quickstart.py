"""The first hour as a user meets it: the quickstart's commands as written,
run in order, and the mistakes on that path, each one line."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from sctd_jax import __main__ as commands
from conftest import default_level_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The documented overrides (docs/quickstart.md, "Shorter runs"), appended to
# each command of that module.
SHORTER = {
    'sctd_jax.train': '--config.train.num_steps=20 --config.train.warmup_steps=5 '
                      '--config.train.eval_every=10 --config.data.tokenizer_docs=300',
    'sctd_jax.evals.finetune': '--config.train.num_steps=10',
}
# SCTD_JAX_QUICKSTART_FULL=1 runs the commands at full length (pytest -s
# prints each one's time).
FULL = os.environ.get('SCTD_JAX_QUICKSTART_FULL') == '1'


def quickstart_section(text: str) -> str | None:
  """The text under '## Quickstart', up to the next '## ' heading."""
  match = re.search(r'^## Quickstart[^\n]*\n(.*?)(?=^## |\Z)', text, re.M | re.S)
  return match.group(1) if match else None


def bash_blocks(text: str) -> list[str]:
  return re.findall(r'^```bash\n(.*?)^```', text, re.M | re.S)


def quickstart_blocks() -> tuple[str, list[str]]:
  """(file, blocks) of README.md's Quickstart section if it has one, else of
  docs/quickstart.md's."""
  for name in ('README.md', os.path.join('docs', 'quickstart.md')):
    with open(os.path.join(ROOT, name)) as f:
      section = quickstart_section(f.read())
    if section is not None:
      return name, bash_blocks(section)
  raise AssertionError('no "## Quickstart" section in README.md or docs/quickstart.md')


def shorten(block: str) -> str:
  """`block` with SHORTER's overrides appended to each command they name."""
  if FULL:
    return block
  lines = block.replace('\\\n', ' ').splitlines()
  for i, line in enumerate(lines):
    module = re.search(r'python -m ([\w.]+)', line)
    if module and module.group(1) in SHORTER:
      lines[i] = f'{line} {SHORTER[module.group(1)]}'
  return '\n'.join(lines) + '\n'


def test_blocks_are_found_and_shortened():
  text = ('# x\n## Quickstart\n```bash\npython -m sctd_jax.train --config c \\\n'
          '  --workdir w\n```\n```python\nnot run\n```\n## Next\n```bash\nls\n```\n')
  blocks = bash_blocks(quickstart_section(text))
  assert blocks == ['python -m sctd_jax.train --config c \\\n  --workdir w\n']
  assert shorten(blocks[0]) == ('python -m sctd_jax.train --config c    --workdir w '
                                f'{SHORTER["sctd_jax.train"]}\n')


def test_quickstart_runs_as_written(tmp_path):
  name, blocks = quickstart_blocks()
  steps = [b for b in blocks if 'pip install' not in b]
  modules = [m for b in steps for m in re.findall(r'python -m ([\w.]+)', b)]
  # The path the quickstart promises, in this order.
  assert modules == ['sctd_jax.train', 'sctd_jax.export', 'sctd_jax.evals.finetune',
                     'sctd_jax.evals.probe', 'sctd_jax.evals.report'], (name, modules)
  assert any("pipeline('fill-mask'" in b for b in steps), name
  os.symlink(os.path.join(ROOT, 'configs'), tmp_path / 'configs')
  # At full length, timed as users run: XLA at its default level.
  env = default_level_env(PYTHONPATH=ROOT) if FULL else dict(os.environ, PYTHONPATH=ROOT)
  outputs = []
  for block in steps:
    started = time.perf_counter()
    run = subprocess.run(['bash', '-e', '-c', shorten(block)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=None if FULL else 1800)
    print(f'{time.perf_counter() - started:6.1f} s  {block.splitlines()[0]}')
    assert run.returncode == 0, f'{name}:\n{block}\n{run.stderr[-3000:]}'
    outputs.append(run)
  train, _, fill_mask = outputs[:3]
  # The summary names the run's result and the next commands.
  workdir = re.search(r'--workdir (\S+)', steps[0]).group(1)
  rows = [json.loads(line) for line in open(tmp_path / workdir / 'metrics.jsonl')]
  steps = rows[-1]['step']
  assert f'Finished {steps} of {steps} steps' in train.stderr, train.stderr[-2000:]
  assert f'Checkpoint: {tmp_path / workdir / "checkpoints" / str(steps)}' in train.stderr
  assert f'full {rows[-1]["val_mlm_full"]:.3f}' in train.stderr
  assert f'python -m sctd_jax.export --workdir {workdir}' in train.stderr
  # Five guesses, each a score and the sentence with the mask filled.
  guesses = fill_mask.stdout.strip().splitlines()
  assert len(guesses) == 5, fill_mask.stdout
  for guess in guesses:
    score, sentence = guess.split(maxsplit=1)
    assert 0 <= float(score) <= 1 and '[MASK]' not in sentence
    assert sentence.startswith('the farmers will') and sentence.endswith('barn.')
  results = json.load(open(tmp_path / workdir / 'finetune' / 'tense' / 'eval_results.json'))
  assert 0 <= results['accuracy'] <= 1
  assert os.path.isfile(tmp_path / workdir / 'probe' / 'probe.json')
  report = open(tmp_path / workdir / 'report' / 'report.md').read()
  assert os.path.basename(workdir) in report


def _run(args, cwd=ROOT):
  return subprocess.run([sys.executable, '-m', *args], cwd=cwd, capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))


def _assert_one_error_line(run, expected: str):
  assert run.returncode == 1, run.stderr[-2000:]
  assert 'Traceback' not in run.stderr, run.stderr[-2000:]
  assert run.stderr.strip() == expected, run.stderr[-2000:]


TRAIN = ['sctd_jax.train', '--config', 'configs/tiny.py']


def test_workdir_that_is_a_file(tmp_path):
  path = tmp_path / 'notes.txt'
  path.write_text('mine')
  _assert_one_error_line(
      _run([*TRAIN, '--workdir', str(path)]),
      f'error: --workdir={path} is a file, not a folder; give a new or existing folder.')
  assert path.read_text() == 'mine'


def test_workdir_that_cannot_be_written(tmp_path):
  if os.geteuid() == 0:  # root writes anywhere but in sysfs.
    path, reason = '/sys/sctd_jax_quickstart_test', 'Operation not permitted'
  else:
    (tmp_path / 'locked').mkdir(mode=0o555)
    path, reason = str(tmp_path / 'locked' / 'run'), 'Permission denied'
  _assert_one_error_line(
      _run([*TRAIN, '--workdir', path]),
      f'error: --workdir={path} cannot be written ({reason}); give a folder you '
      'can write to.')


@pytest.mark.parametrize('override, expected', [
    ('--config.train.num_stepz=3', 'train.num_stepz; did you mean train.num_steps?'),
    ('--config.modle.hidden_size=3', 'modle; did you mean model?'),
])
def test_misspelled_key(tmp_path, override, expected):
  _assert_one_error_line(
      _run([*TRAIN, '--workdir', str(tmp_path), override]),
      f"error: unknown config key {expected} The --config file's get_config() "
      'has every key.')


def test_missing_config_file(tmp_path):
  _assert_one_error_line(
      _run(['sctd_jax.train', '--config', 'configs/tiyn.py', '--workdir', str(tmp_path)]),
      "error: --config=configs/tiyn.py: [Errno 2] No such file or directory: "
      "'configs/tiyn.py'; give a config file with get_config(), e.g. configs/tiny.py.")


def test_missing_init_folder(tmp_path):
  missing = str(tmp_path / 'runs' / 'tiyn')
  _assert_one_error_line(
      _run(['sctd_jax.evals.finetune', '--config', 'configs/finetune.py',
            '--workdir', str(tmp_path / 'ft'), f'--config.init={missing}']),
      f"error: config key init='{missing}' is invalid: must be a pretraining "
      'workdir, a Hugging Face BERT folder (a directory with a config.json) or '
      'a Hub id.')
  _assert_one_error_line(
      _run(['sctd_jax.evals.probe', '--init', missing, '--out', str(tmp_path / 'p')]),
      f'error: {missing}/config.json not found (a training workdir or a Hugging '
      'Face BERT folder has one; give the --workdir of a python -m sctd_jax.train '
      'run or the --out of python -m sctd_jax.export).')


def test_export_without_checkpoint(tmp_path):
  # What a run leaves before its first save: its config, no checkpoints/.
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'config.json').write_text(json.dumps({'method': 'sctd', 'model': {}, 'train': {}}))
  _assert_one_error_line(
      _run(['sctd_jax.export', '--workdir', str(workdir), '--out', str(tmp_path / 'hf')]),
      f'error: No checkpoint in {workdir}; the run saves one every '
      'train.checkpoint_every steps and at its end: run (or resume) python -m '
      f'sctd_jax.train with --workdir {workdir} first.')


def test_command_list_names_every_command():
  listing = subprocess.run([sys.executable, '-m', 'sctd_jax'], cwd=ROOT, text=True,
                           capture_output=True, timeout=60,
                           env=dict(os.environ, PYTHONPATH=ROOT))
  assert listing.returncode == 0 and not listing.stderr
  listed = re.findall(r'^  (\S+)  ', listing.stdout, re.M)
  # Every module that runs as a command, and nothing else.
  package = os.path.join(ROOT, 'sctd_jax')
  runnable = sorted(
      os.path.relpath(os.path.join(folder, f), package)[:-3].replace(os.sep, '.')
      for folder, _, files in os.walk(package) for f in files
      if f.endswith('.py') and f != '__main__.py' and re.search(
          r"^if __name__ == '__main__':", open(os.path.join(folder, f)).read(), re.M))
  assert sorted(listed) == runnable, (listed, runnable)
  assert listed == [name for name, _ in commands.COMMANDS]
  for name in listed:
    assert len(re.search(rf'^  {re.escape(name)} +(.*)$', listing.stdout, re.M)
               .group(1)) > 10
