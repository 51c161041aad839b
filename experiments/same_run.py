"""The keys that do not make a different run, in one place: a sweep keeps a completed record whose config differs
only in them (experiments.sweep), a checkpoint resumes across them (experiments.checkpoint), a report pools runs
that differ only in them (analyze.report.studies), and a sweep point's folder name leaves them out
(conf/config.yaml's hydra.job.config.override_dirname.exclude_keys, through the `not_the_run` resolver that
experiments.schema.register_configs registers). Light on purpose (no torch): train.py's config checks import it.
docs/DESIGN.md, Contracts."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

# group -> its keys that change no result (None: the whole group): where results are sent, how a report compares
# them, which files a run keeps, and where the data is read from and with how many workers
NOT_THE_RUN: dict[str, tuple[str, ...] | None] = {
    "logger": None, "compare": None, "train": ("save_model", "keep_checkpoints"),
    "data": ("root", "cache_dir", "download", "workers"),
}
NOT_TRAINING = ("profile",)  # groups that change a run's record but not its training: a checkpoint resumes across them


def same_run_config(config: Mapping[str, Any], training_only: bool = False) -> dict[str, Any]:
    """`config` as a record stores it (JSON round trip) without the keys above; `training_only` also without the
    groups that do not change training."""
    plain = json.loads(json.dumps(config, default=str))
    for group, keys in NOT_THE_RUN.items():
        if keys is None:
            plain.pop(group, None)
        elif isinstance(plain.get(group), dict):
            plain[group] = {k: v for k, v in plain[group].items() if k not in keys}
    for group in NOT_TRAINING if training_only else ():
        plain.pop(group, None)
    return plain


def dirname_excludes() -> list[str]:
    """The overrides a sweep point's folder name leaves out: the study preset, and every key above, as Hydra names
    an override (`logger=none`, `logger.mode=...`, `data.root=...`)."""
    from .schema import CompareConf, WandbConf  # here: the schema registers this function as a resolver

    schemas = {"logger": WandbConf, "compare": CompareConf}  # every key of a group left out whole
    keys = ["experiment"]
    for group, sub in NOT_THE_RUN.items():
        # a group's `name` is its choice (`logger=none`), refused as a key of its own (experiments.config)
        names = sub or [f.name for f in dataclasses.fields(schemas[group]) if f.name != "name"]
        keys += ([group] if sub is None else []) + [f"{group}.{k}" for k in names]
    return keys
