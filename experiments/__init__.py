"""How one run goes: model assembly, datasets, fitting with fastai's Learner, tracking.

    experiments.run(cfg, out_dir) -> validation accuracy
"""
from .runner import RunFailed, run

__all__ = ["RunFailed", "run"]
