"""How one run goes: model assembly, datasets, fitting with fastai's Learner, tracking.

    experiments.run(cfg, out_dir) -> validation accuracy
"""
from importlib import import_module

from stems.base import quiet_fastai_import

quiet_fastai_import()  # first of all: every module below may be the first to import fastai

__all__ = ["RunFailed", "run"]


def __getattr__(name: str):
    # experiments.run loads fastai and torchvision (seconds): resolved on first use (PEP 562), so that
    # `train.py --help` and the config checks, which import only experiments.config, start fast
    if name in __all__:
        return getattr(import_module(".runner", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
