"""CAPI's objective (Darcet et al. 2025) on `ijepa.py`'s set-up: no VQ; the
predictor's outputs at the masked target positions predict the *clusters* of
the target encoder's tokens there, instead of regressing the tokens.

The loss is `loss.capi_weight` (1.0) alone, with the clustering's own loss
beside it: the target encoder's whole-image tokens are clustered online into
`loss.capi_clusters` (256) prototypes (a linear layer on the normalised
tokens, trained only by its cross-entropy against its own Sinkhorn-balanced
assignments); a cosine head on the predictor's outputs is trained against
those assignments at the target positions. Temperatures, 3 Sinkhorn-Knopp
iterations per position and the initialisations are CAPI's defaults.
Deviations, for this project's set-up: `ijepa.py`'s encoder, predictor,
masks (I-JEPA's blocks, not CAPI's inverse-block 65% mask), EMA momentum
0.996 -> 1.0 (CAPI: 0.999 -> 1.0 over far longer runs) and single AdamW
(CAPI gives the clustering its own, at half the learning rate); 256
clusters for a 64-wide encoder (CAPI: 16,384 for ViT-L); no weight decay on
the clustering (CAPI: 0.01).
"""
from configs import base
from configs import ijepa


def build():
  c = ijepa.build()
  c.variant = 'capi'
  c.loss.invariance_weight, c.loss.capi_weight = 0.0, 1.0    # clusters, not tokens
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
