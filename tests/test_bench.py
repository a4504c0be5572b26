"""The benchmark CLI on a tiny shape: memory only (--cycles 0) of chosen
variants, one timed cycle, checkpoint timing (--checkpoint) and the input pipeline (--data),
each with --json (which once crashed after --data)."""

import json
import subprocess
import sys

import pytest

from test_train import ROOT

SHAPE = ['--config', 'configs/bench.py', '--config.model.num_layers=4',
         '--config.model.hidden_size=32', '--config.model.num_heads=2',
         '--config.model.intermediate_size=64', '--config.model.vocab_size=500',
         '--config.data.seq_len=16', '--config.data.max_predictions=3',
         '--config.train.batch_size=4', '--config.sctd.fi=2', '--hf=false']


def _bench(tmp_path, *args):
  out = tmp_path / 'bench.json'
  run = subprocess.run([sys.executable, '-m', 'sctd_jax.bench', *SHAPE, *args,
                        f'--json={out}'], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)   # a loaded 2-core machine
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'Traceback' not in run.stderr
  return run, json.load(open(out))


def test_cycles_zero_compiles_the_chosen_variants_and_reports_memory(tmp_path):
  run, (result,) = _bench(tmp_path, '--cycles=0', '--variants=sctd_shared')
  assert json.loads(run.stdout) == result   # one entry per vocabulary size
  assert result['shape']['mesh'] == [1, 1, 1]
  # Baseline is compiled whatever is chosen: every ratio is to it.
  assert set(result['memory_per_device_mb']) == {'baseline', 'sctd_shared'}
  assert all(mb > 0 for mb in result['memory_per_device_mb'].values())
  assert 'rows' not in result   # nothing timed


def test_an_unknown_variant_is_refused_with_the_known_ones():
  run = subprocess.run([sys.executable, '-m', 'sctd_jax.bench', *SHAPE, '--variants=sctd,bert'],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert run.returncode != 0
  assert "unknown ['bert']" in run.stderr and 'sctd_shared' in run.stderr
  assert 'Traceback' not in run.stderr


def test_one_timed_cycle_gives_a_row_per_method(tmp_path):
  run, (result,) = _bench(tmp_path, '--cycles=1')
  rows = {r['method']: r for r in result['rows']}
  assert list(rows) == ['baseline', 'token_drop', 'sctd', 'sctd_shared']
  assert rows['baseline']['ratio'] == 1.0
  for r in rows.values():
    assert r['step_time_s'] > 0
    # 4 x 16 tokens per step.
    assert r['tokens_per_s'] * r['step_time_s'] == pytest.approx(64)
    assert r['ratio'] == pytest.approx(r['step_time_s'] / rows['baseline']['step_time_s'])
  assert rows['baseline']['cost_model_ratio'] == 1.0
  # Fi = 2: an SCTD cycle is one dropped step and one dropped-plus-full step,
  # (2 drop + full) / 2 / full = drop/full + 1/2.
  drop = rows['token_drop']['cost_model_ratio']
  assert 0.5 < drop < 1
  assert rows['sctd']['cost_model_ratio'] == pytest.approx(drop + 0.5)
  assert result['shape']['seq_len'] == 16 and result['shape']['fi'] == 2
  assert 'token_drop' in run.stdout and 'cost model' in run.stdout   # the table


def test_checkpoint_times_save_and_restore_of_this_shape(tmp_path):
  transformers = pytest.importorskip('transformers')
  _, result = _bench(tmp_path, f'--checkpoint={tmp_path / "scratch"}')
  c = result['checkpoint']
  # HF's BertForMaskedLM of the same shape (tied decoder) counts the
  # parameters independently; it drops BERT's pooler, which ours keeps.
  hf = transformers.BertForMaskedLM(transformers.BertConfig(
      vocab_size=500, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
      intermediate_size=64, max_position_embeddings=512))
  assert c['params'] == hf.num_parameters() + 32 * 32 + 32
  assert 0 < c['save_blocking_s'] <= c['save_total_s']
  assert c['restore_s'] > 0
  assert c['size_mb'] * 2**20 > 4 * c['params']   # float32 params, at least


def test_data_measures_the_pipeline_and_writes_json(tmp_path):
  run, result = _bench(tmp_path, '--data', '--config.data.vocab_size=300',
                       '--config.data.tokenizer_docs=100')
  assert json.loads(run.stdout) == result
  assert result['source'] == 'synthetic' and result['seq_len'] == 16
  assert result['pipeline_tokens_per_s'] > 0
