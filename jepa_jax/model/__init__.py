"""The networks: `vit` holds the ViT context / target encoders (patch, conv or
colour-id embeddings, padding-aware attention), the predictor and the EMA of
the target encoder; `masking` draws the multi-block context and target masks
with fixed token counts, so every step has static shapes, and the views'
augmentations (colour jitter, crop)."""
