"""sctd_jax: BERT pretraining in JAX/Flax with token dropping and SCTD.

Zhong et al., "Revisiting Token Dropping Strategy in Efficient BERT
Pretraining", ACL 2023; token dropping after Hou et al., ACL 2022.
"""

__version__ = '0.1.0'
