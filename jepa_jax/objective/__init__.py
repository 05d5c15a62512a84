"""What training minimises: the loss terms as pure functions with their
formulas and sources (`losses`: InfoNCE with a clamped temperature, SIGReg,
invariance, relational terms), their composition into the JEPA loss with
the quantizer's terms (`terms`), and the optimizer and learning-rate
schedule (`optimizer`)."""
