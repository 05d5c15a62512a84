"""Studies and benchmarks built on jepa_jax (run as `python -m experiments.<name>`)."""
