"""The run folder: every file name in it and how files are written (`files`:
atomic JSON, JSONL, TensorBoard; the lock that keeps one run per workdir),
opening a workdir to resume or start (`opening`, with the config checks on
resume), checkpoints and their checksums (`checkpoint`, `integrity`), reading
a finished run's logs (`reader`) and summary (`summary`), and the public way
to use a trained run (`trained`: `load_run`, encode, codes)."""
