"""The tools built on jepa_jax, each run as `python -m experiments.<name>`:
the assessment (`assess` trains, evaluates and reports variants over seeds;
`report*` write its report; `learning_table` the "does the encoder learn?"
table), `ladder` (the option ladder), `benchmarks/` (speed against PyTorch)
and `cluster/` (job scripts). Each study's own code lives beside its results
under `results/<study>/` (run as `python -m experiments.results.<study>.<name>`)."""
