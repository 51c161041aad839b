"""stemlab's fair-protocol sweeper (`hydra/sweeper=tuned`): tune each point's learning rate on a tuning split
carved from the training set, then train every point at its chosen LR over the seeds (tuned_sweeper.py)."""
