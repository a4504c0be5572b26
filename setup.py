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
        'optax>=0.2.5',  # optax.tree.
        'orbax-checkpoint>=0.11',
        'transformers>=4.45',
        'tokenizers>=0.20',
        'datasets>=4.0',  # datasets.List.
        'ml_collections>=0.1.1',
        'absl-py>=2.0',
        'etils[epath]>=1.5',  # One path layer for local and gs:// workdirs (sctd_jax.paths).
        'numpy>=1.26',
        'safetensors>=0.4',
        'tensorboardX>=2.6',
        'tqdm>=4.66',
        'matplotlib>=3.8',
        'scikit-learn>=1.3',  # Linear probes and GLUE metrics (sctd_jax.evals).
        'scipy>=1.10',  # GLUE correlations (sctd_jax.evals.metrics).
    ],
    extras_require={
        # `pip install -e .` brings the CPU jaxlib; these add an accelerator's.
        'cuda': ['jax[cuda12]'],
        'tpu': ['jax[tpu]'],
        # gs:// workdirs: etils.epath reaches GCS through gcsfs, TensorBoard
        # through google-cloud-storage (Orbax through TensorStore, built in).
        'gcs': ['gcsfs>=2024.2', 'google-cloud-storage>=2.14'],
        'wandb': ['wandb>=0.17'],
        # torch==2.13.0 is the CPU build; unpinned torch pulls a CUDA build.
        'test': ['pytest>=8', 'pytest-xdist>=3', 'torch==2.13.0',
                 'gcp-storage-emulator>=2024.8', 'gcsfs>=2024.2',
                 'google-cloud-storage>=2.14', 'wandb>=0.17', 'seqeval>=1.2'],
    },
)
