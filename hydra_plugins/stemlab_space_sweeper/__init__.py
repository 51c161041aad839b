"""stemlab's design-space sweeper (`hydra/sweeper=space`): sample stems from the stem design space (stems.space) with
a seed, optionally inside a cost band, and run each over the sweep's other points (space_sweeper.py)."""
