"""sctd_jax: BERT pretraining in JAX/Flax with token dropping and SCTD.

Zhong et al., "Revisiting Token Dropping Strategy in Efficient BERT
Pretraining", ACL 2023; token dropping after Hou et al., ACL 2022.
"""

__version__ = '0.1.0'


def __getattr__(name):
  # Imported on first use, so `import sctd_jax` does not start JAX.
  if name == 'load_pretrained':
    from sctd_jax.hf.load import load_pretrained
    return load_pretrained
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
