"""Side-by-side benchmarks: jepa_jax against PyTorch and vector-quantize-pytorch.

Run `python -m experiments.benchmarks [--quick]`; see `__main__.py`.
"""
