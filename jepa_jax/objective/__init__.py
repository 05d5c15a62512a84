"""What training minimises: the loss terms as pure functions with their
formulas and sources (`losses`: InfoNCE with a clamped temperature, SIGReg,
invariance, relational terms; `prototypes`: DINO's and CAPI's cross-entropies
against Sinkhorn-balanced prototype targets; `multiview`: LeJEPA's objective
on augmented views with its projector), and their composition into the JEPA loss with
the quantizer's terms, with the optimizer and learning-rate schedule that
minimise it (`terms`)."""
