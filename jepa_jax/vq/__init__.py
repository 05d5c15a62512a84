"""The vector-quantized bottleneck: `codebook` (nearest-code search, EMA
updates, dead-code refresh) on `assignment` (the one distance formula, the
nearest code, balanced and IBQ assignment), the anti-collapse options as pure
functions (`anticollapse`: cosine codes, SimVQ, CVQ re-anchoring, FSQ, the
rotation trick), the layer's static settings read once from the config
(`spec`), the configured layer itself (`quantizer`), and usage, churn and
code-age bookkeeping (`health`)."""
