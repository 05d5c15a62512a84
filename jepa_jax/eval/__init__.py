"""Measuring a run: embedding metrics (`metrics`: effective rank, isotropy,
spread; means over seeds with bootstrap intervals), the measurement points
of a run (`measure`), probes and code metrics (`probes`: linear and k-NN
probes, the probe set, code-label NMI / AMI, k-means codes), the probe
trajectory over a run (`trajectory`), and the success criteria and codebook
goals a finished run is judged by (`goals`). The commands on top are
`jepa_jax.evaluate` and `jepa_jax.diagnose`."""
