"""Gradient VQ as the reference describes its Option C: gentle, the codebook
trained by the optimizer (`vq.ema_decay=None`), with its own lower learning
rate and a longer schedule.

The reference: "Codebook becomes trainable parameters like other weights ...
May need lower learning rate for codebook ... Typically needs more epochs to
converge". It gives no numbers; jepa_jax's choice: codebook peak learning
rate 1e-4 (a tenth of train.learning_rate, same warm-up cosine shape) and 60
epochs (twice gentle's 30, the reference's "stable for 60 epochs" red-flag
length). `configs/gradient.py` is the same without both (30 epochs, one
learning rate).
"""
from configs import base, gradient


def build():
  c = gradient.build()
  c.variant = 'gradient_long'
  c.vq.codebook_learning_rate = 1e-4
  c.train.num_epochs = 60
  return c


def get_config(arg=None):
  return base.with_variant(build(), arg)
