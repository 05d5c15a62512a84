"""The training loop: the jitted train and eval steps (`step`), the loop
that opens a run, runs its epochs and finishes it (`loop`), the state the
loop carries, its clock, periodic actions and epoch ends (`loop_state`),
where a run starts from (`start`: fresh, init-from, no silent retraining),
two-stage runs (`stages`), devices, hosts, batch prefetch and the persistent
compilation cache (`devices`), SIGTERM / Ctrl-C (`interrupts`) and the
collapse monitor with its early stopping (`monitor`)."""
