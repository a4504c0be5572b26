"""Shared fixtures: a tiny BERT config and random batches."""

import os
import shutil
import tempfile

# Arrow caches that `datasets` writes (the tokenizer CLI, corpora) go to a
# directory of this session, not the home directory; set before `datasets`
# is imported, and inherited by the CLI runs tests start.
HF_DATASETS_CACHE = os.environ['HF_DATASETS_CACHE'] = tempfile.mkdtemp(
    prefix='sctd-tests-hf-datasets-')

HERE = os.path.dirname(os.path.abspath(__file__))

# Tests check numbers, not speed: XLA's cheapest CPU codegen halves compile
# time (and doubles step time). Set before JAX starts; subprocesses inherit
# it. A process that must run as users do (test_hf_parity, test_sharding,
# the quickstart's full-length timing) gets `default_level_env()`.
USER_XLA_FLAGS = os.environ.get('XLA_FLAGS', '')
if not os.environ.get('SCTD_TESTS_XLA_DEFAULT_LEVEL'):
  os.environ['XLA_FLAGS'] = f'{USER_XLA_FLAGS} --xla_backend_optimization_level=0'.strip()

import contextlib

import jax
import jax.monitoring
import numpy as np
import pytest

from sctd_jax import config as config_lib
from sctd_jax import models
from sctd_jax import step as step_lib

VOCAB = 97
PAD, UNK, CLS, SEP, MASK = range(5)


def default_level_env(**extra) -> dict:
  """This process's environment with XLA at its default optimisation level,
  as users run: for subprocesses whose numbers or times must be the users'."""
  return dict(os.environ, SCTD_TESTS_XLA_DEFAULT_LEVEL='1', XLA_FLAGS=USER_XLA_FLAGS, **extra)


# Dropout doubles a train step's compile at -O0 (its random-bit fusions):
# tiny_config leaves it off, and the tests about masks turn it on with this.
DROPOUT = {'model.dropout_rate': 0.1, 'model.attention_dropout_rate': 0.1}


def offline_env(folder) -> dict:
  """The environment of a user without the Hub: offline, as
  HF_HUB_OFFLINE=1 makes huggingface_hub and datasets, with empty caches
  under `folder`."""
  return dict(os.environ, HF_HUB_OFFLINE='1', HF_HOME=str(folder),
              HF_HUB_CACHE=str(folder / 'hub'), HF_DATASETS_CACHE=str(folder / 'datasets'))


def tiny_config(**overrides):
  c = config_lib.base_config()
  c.model.update(vocab_size=VOCAB, hidden_size=32, num_layers=4, num_heads=4,
                 intermediate_size=64, max_position_embeddings=64,
                 dropout_rate=0.0, attention_dropout_rate=0.0)
  c.train.update(num_steps=50, batch_size=4, learning_rate=1e-3, warmup_steps=2)
  c.data.update(seq_len=16, max_predictions=4)
  for key, value in overrides.items():
    section, _, name = key.rpartition('.')
    (c[section] if section else c)[name] = value
  return c


def save_word_bert(folder, vocab, head='BertModel'):
  """Saves in `folder` a tokenizer of exactly `vocab` (special tokens first)
  and a tiny random HF `head` (a transformers class name) over it: a BERT
  folder whose pieces the tests choose."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  (folder / 'vocab.txt').write_text('\n'.join(vocab) + '\n')
  transformers.BertTokenizerFast(str(folder / 'vocab.txt')).save_pretrained(folder)
  torch.manual_seed(0)
  getattr(transformers, head)(transformers.BertConfig(
      vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
  return folder


def random_batch(config, seed=0, pad_from=None):
  """Batch of random ids with [CLS]/[SEP], optional right padding per row."""
  rng = np.random.default_rng(seed)
  B, S, P = config.train.batch_size, config.data.seq_len, config.data.max_predictions
  ids = rng.integers(5, config.model.vocab_size, (B, S)).astype(np.int32)
  lengths = np.full(B, S) if pad_from is None else np.asarray(pad_from)
  mask = (np.arange(S)[None] < lengths[:, None]).astype(np.int32)
  ids[:, 0] = CLS
  ids[np.arange(B), lengths - 1] = SEP
  ids = np.where(mask == 1, ids, PAD)
  positions = np.stack([np.sort(rng.choice(np.arange(1, n - 1), P, replace=False))
                        for n in lengths]).astype(np.int32)
  labels = np.take_along_axis(ids, positions, 1)
  np.put_along_axis(ids, positions, MASK, 1)
  return dict(input_ids=ids, token_type_ids=np.zeros_like(ids),
              attention_mask=mask, mlm_positions=positions, mlm_ids=labels,
              mlm_weights=np.ones((B, P), np.float32))


@contextlib.contextmanager
def count_compiles(fun_name):
  """Yields a list that collects one entry per XLA compilation (or
  persistent-cache load) of a function whose name contains `fun_name`,
  through JAX's public monitoring events rather than log text."""
  compiles = []
  def listener(event, duration, **kwargs):
    del duration
    if (event == '/jax/core/compile/backend_compile_duration'
        and fun_name in str(kwargs.get('fun_name', ''))):
      compiles.append(kwargs['fun_name'])
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield compiles
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture
def config():
  return tiny_config()


def make_model(config):
  return models.BertForMaskedLM(step_lib.model_config(config, config.model.vocab_size))


@pytest.fixture(scope='session', autouse=True)
def datasets_cache():
  yield HF_DATASETS_CACHE
  shutil.rmtree(HF_DATASETS_CACHE, ignore_errors=True)


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory):
  # Tests (and the CLI runs they start) that compile the same step share a
  # cache that starts empty, so the suite's time is that of a fresh machine.
  # xdist's workers share it too (their base folders have one parent, new per
  # session): a program one worker compiled, the other loads. JAX writes an
  # entry in place, so a load that races its write fails with a warning and
  # compiles instead.
  if os.environ.get('PYTEST_XDIST_WORKER'):
    path = tmp_path_factory.getbasetemp().parent / 'xla'
    path.mkdir(exist_ok=True)
  else:
    path = tmp_path_factory.mktemp('xla')
  path = str(path)
  jax.config.update('jax_compilation_cache_dir', path)
  os.environ['SCTD_JAX_COMPILATION_CACHE'] = path


# The slow tier: tests that start several training processes, an emulator or
# full CLI fault runs. `python -m pytest tests` (the README's command) skips
# them; `python -m pytest --slow -m slow tests` runs only them (.ci/run runs
# the default tier, as the README says).
SLOW = {'test_cloud.py', 'test_preemption.py', 'test_topology.py', 'test_launch.py',
        'test_faults_cli.py', 'test_data_multiprocess.py', 'test_multiprocess.py',
        'test_data_reproducible.py', 'test_bench.py',
        'test_data_wait.py::test_tiny_run_does_not_wait_for_synthetic_data',
        'test_recipes.py::test_wikipedia_and_bookcorpus_from_local_copies',
        'test_recipes.py::test_c4_streamed_from_a_local_copy',
        'test_quickstart.py::test_quickstart_runs_as_written',
        'test_sharding.py::test_mesh_at_the_default_xla_optimisation_level',
        'test_finetune.py::test_mnli_reports_both_validation_splits_through_the_cli',
        'test_scan_layers.py::test_scanned_sctd_run_compiles_once_and_matches_the_unrolled_run',
        'test_cpu_speed.py::test_dropout_prng_is_deterministic_and_draws_other_masks',
        'test_data_workers.py::test_batches_are_the_same_with_any_number_of_workers',
        # Moved to shorten the default tier; most have a sibling there that
        # runs the same code (docs/testing.md names those that do not):
        'test_checkpointing.py::test_a_resumed_run_keeps_the_dropout_masks_it_began_with',
        'test_step.py::test_grad_accumulation_equals_one_big_batch[baseline-paper]',
        'test_step.py::test_grad_accumulation_equals_one_big_batch[sctd-released]',
        'test_step.py::test_training_lowers_the_mlm_loss_on_a_fixed_batch[float16]',
        'test_scan_layers.py::test_scanned_loss_and_grads_equal_the_unrolled_ones[full-False]',
        'test_scan_layers.py::test_scanned_loss_and_grads_equal_the_unrolled_ones[drop-False]',
        'test_hf_parity.py::test_parity_at_the_default_xla_optimisation_level',
        'test_finetune.py::test_regression_from_local_files_through_the_cli',
        'test_export.py::test_init_from_refuses_another_shape_naming_the_key',
        'test_report.py::test_cli_renders_the_report_of_tiny_runs',
        'test_probe.py::test_cli_compares_two_inits',
        'test_step.py::test_remat_keeps_parameter_paths_and_values',
        'test_suites.py::test_best_epoch_is_the_best_of_the_epochs_and_the_last_is_the_plain_run'}


def pytest_addoption(parser):
  parser.addoption('--slow', action='store_true',
                   help='also run the slow tier (tests marked slow)')


def pytest_configure(config):
  config.addinivalue_line('markers', 'slow: the slow tier; runs with --slow')


def pytest_collection_modifyitems(config, items):
  for item in items:
    name = os.path.basename(str(item.fspath))
    if SLOW & {name, f'{name}::{item.originalname}', f'{name}::{item.name}'}:
      item.add_marker(pytest.mark.slow)
  if not config.getoption('--slow'):
    skip = pytest.mark.skip(reason='slow tier: run with --slow')
    for item in items:
      if 'slow' in item.keywords:
        item.add_marker(skip)
