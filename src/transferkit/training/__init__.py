"""Training: the one loop (fit), optimizers, batching, checkpoints, early stopping."""
