"""Optional W&B logging, offline: the run id is kept in the workdir, so a
resumed job continues the same W&B run."""

import pytest

from sctd_jax import config as config_lib
from sctd_jax import metrics_log

wandb = pytest.importorskip('wandb')


def _config():
  c = config_lib.base_config()
  c.wandb.project = 'sctd-test'
  return c


def _offline_runs(workdir):
  return sorted(p.name for p in (workdir / 'wandb').glob('offline-run-*'))


def test_off_by_default(tmp_path):
  assert metrics_log.start_wandb(config_lib.base_config(), str(tmp_path)) is None
  assert not (tmp_path / 'wandb_run_id').exists()


def test_resumed_job_logs_to_the_same_run(tmp_path, monkeypatch):
  monkeypatch.setenv('WANDB_MODE', 'offline')
  monkeypatch.setenv('WANDB_SILENT', 'true')
  first = metrics_log.start_wandb(_config(), str(tmp_path))
  metrics_log.wandb_log(first, dict(step=1, loss=5.0, mlm_drop=None))
  first.finish()
  run_id = (tmp_path / 'wandb_run_id').read_text()
  assert first.id == run_id and len(run_id) >= 8

  again = metrics_log.start_wandb(_config(), str(tmp_path))   # the requeued job
  metrics_log.wandb_log(again, dict(step=2, loss=4.0, mlm_drop=None))
  again.finish()
  assert again.id == run_id
  runs = _offline_runs(tmp_path)
  assert len(runs) == 2 and all(name.endswith(run_id) for name in runs)
