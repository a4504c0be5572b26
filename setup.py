from setuptools import find_packages, setup

setup(
    name='sctd_jax',
    version='0.1.0',
    description=('BERT pretraining in JAX/Flax with token dropping and '
                 'semantic-consistent token dropping (SCTD, ACL 2023).'),
    packages=find_packages(include=['sctd_jax', 'sctd_jax.*']),
    python_requires='>=3.10',
    install_requires=[
        'jax>=0.6',
        'flax>=0.10',
        'optax>=0.2.4',
        'orbax-checkpoint>=0.11',
        'transformers>=4.45',
        'tokenizers>=0.20',
        'datasets>=3.0',
        'ml_collections>=0.1.1',
        'absl-py>=2.0',
        'numpy>=1.26',
        'safetensors>=0.4',
        'tensorboardX>=2.6',
        'tqdm>=4.66',
        'matplotlib>=3.8',
        'scikit-learn>=1.3',  # Linear probes (sctd_jax.evals.probe).
        'scipy>=1.10',
    ],
    extras_require={
        # torch==2.13.0 is the CPU build; unpinned torch pulls a CUDA build.
        'test': ['pytest>=8', 'pytest-xdist>=3', 'torch==2.13.0', 'seqeval>=1.2'],
    },
)
