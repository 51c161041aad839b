"""`python -m analyze report`: the stem study's answer, from result records (or W&B runs).

One role per module, imports pointing one way (data → studies → statistics → render, figures → cli):
`data` reads the records through experiments.record (unreadable ones skipped and named), `wandb_runs`
reads W&B runs as records, `studies` splits them into studies and stages, `statistics` and `comparison` compute
the numbers (t intervals, paired comparisons with Bonferroni's correction and TOST, P(best), power, Pareto front,
depth shares, LR tuning), `render` writes the markdown, `figures` the PNGs, and `cli` is the `report` subcommand.
Records that span two or more contexts (trunk, dataset, size, epochs, …) add a section across them: `contexts` tells
them apart and names them, `universality` computes τ, the probability of one ranking everywhere, the interaction
test and what held, `across` writes the section, its answer by the preset's rule, and its forest plot.
"""
