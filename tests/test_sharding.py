"""The same train_step under data, FSDP and tensor meshes on 8 fake CPU
devices: same losses as one device, parameters really sharded."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from sctd_jax import config as config_lib
from sctd_jax import sharding

HERE = os.path.dirname(os.path.abspath(__file__))
MESHES = ['8,1,1', '2,4,1', '2,2,2', '1,2,4']


@pytest.fixture(scope='module')
def results():
  env = dict(os.environ, XLA_FLAGS=os.environ.get('XLA_FLAGS', '') +
             ' --xla_force_host_platform_device_count=8')
  run = subprocess.run([sys.executable, 'mesh_check.py', *MESHES], cwd=HERE, env=env,
                       capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  return json.loads(run.stdout.splitlines()[-1])


@pytest.mark.parametrize('mesh', MESHES)
def test_mesh_gives_single_device_losses(results, mesh):
  key = str(tuple(map(int, mesh.split(','))))
  np.testing.assert_allclose(results[key]['losses'], results['None']['losses'], rtol=1e-5)
  assert results[key]['compiles'] == 1


@pytest.mark.parametrize('mesh', MESHES)
def test_params_and_batch_are_sharded_by_the_rules(results, mesh):
  data, fsdp, tensor = map(int, mesh.split(','))
  got = results[str((data, fsdp, tensor))]
  # vocab -> tensor, embed -> fsdp, heads -> tensor, mlp -> tensor.
  want = {'word_embeddings': [96 // tensor, 32 // fsdp],
          'query': [32 // fsdp, 32 // tensor],
          'ffn_in': [32 // fsdp, 64 // tensor]}
  assert got['params'] == want
  assert got['adam_mu'] == want   # optimizer moments follow their params
  assert got['importance'] == [96]   # replicated
  assert got['batch'] == [8 // (data * fsdp), 16]


def test_mesh_shape_resolution_and_errors():
  mesh = lambda **kw: ml_collections.ConfigDict(dict(dict(data=-1, fsdp=1, tensor=1), **kw))
  assert sharding.mesh_shape(mesh(), 8) == (8, 1, 1)
  assert sharding.mesh_shape(mesh(tensor=2), 8) == (4, 1, 2)
  assert sharding.mesh_shape(mesh(data=2, fsdp=-1, tensor=2), 8) == (2, 2, 2)
  with pytest.raises(config_lib.ConfigError, match='mesh'):
    sharding.mesh_shape(mesh(tensor=3), 8)
  with pytest.raises(config_lib.ConfigError, match='mesh'):
    sharding.mesh_shape(mesh(data=2, fsdp=2, tensor=1), 8)
  with pytest.raises(config_lib.ConfigError, match='at most one'):
    sharding.mesh_shape(mesh(fsdp=-1), 8)
