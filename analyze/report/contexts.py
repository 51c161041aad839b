"""The contexts of a report: what differs between its records apart from the stem (and its parameters), the seed
and the learning rate — trunk, dataset, image size, epochs, … Each context is one study (studies.split_studies
already keeps different configs apart); a context's label is the `context=` override its runs were launched with
(conf/context/), else made from its dataset, image size, trunk and epochs and any other setting that differs.

Two studies that differ only in their sweep or LR (a fixed-LR sweep beside a tuned one) are one context: the
larger study stands for it in the comparison across contexts, and the others are named."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from .data import run_overrides
from .studies import Study, flatten

OVERRIDE = "context"                                  # the config group of the study presets' contexts
NAMED = ("data.name", "data.image_size", "trunk.name", "train.epochs")  # always in a made label
# not a context: the LR, chosen per stem; the study's name and what the profile measures, which change no training
# (so a context one study ran, e.g. the 64-px Imagenette study, stands in another's comparison: `report --with`);
# the keys that make no different run (data.root among them) are out already
NOT_CONTEXT = ("train.lr", "study", "profile.")


@dataclass
class Context:
    label: str
    study: Study
    table: pd.DataFrame  # the study's stem table (statistics.stem_table)


def context_config(study: Study) -> dict[str, object]:
    """The study's flattened config without what is not a context (NOT_CONTEXT; a study's config is already without
    what makes no different run, experiments.same_run: the dataset's folder, W&B, ...)."""
    return {k: v for k, v in flatten(study.config).items()
            if not any(k == n or (n.endswith(".") and k.startswith(n)) for n in NOT_CONTEXT)}


def override_name(study: Study) -> str | None:
    """The `context=NAME` override the study's runs were launched with (Hydra's .hydra/overrides.yaml beside a
    record; runs without one, e.g. W&B runs, do not count), or None when none names one or two names differ."""
    names = {run_overrides(run.source).get(OVERRIDE) for run in study.runs + study.tuning} - {None}
    return names.pop() if len(names) == 1 else None


def image_size(study: Study) -> object:
    """The configured image size, else the one the model was built for (a dataset at its own size, e.g. MNIST's 28)."""
    size = (study.config.get("data") or {}).get("image_size")
    return size if size is not None else next(((r.record.get("model") or {}).get("image_size") for r in study.runs
                                               if (r.record.get("model") or {}).get("image_size")), None)


def made_label(study: Study, differing: list[str]) -> str:
    """'mnist5k 28px xresnet18 2ep', plus every other differing setting as key=value."""
    c = context_config(study)
    size = image_size(study)
    parts = [str(c.get("data.name")), *([f"{size}px"] if size is not None else []), str(c.get("trunk.name")),
             f"{c.get('train.epochs')}ep"]
    return " ".join(parts + [f"{k}={c.get(k)}" for k in differing if k not in NAMED])


def find_contexts(studies: list[Study], tables: list[pd.DataFrame]) -> tuple[list[Context], list[Study]]:
    """One Context per distinct context config among the studies with completed final runs (the first, i.e. the
    largest, study of a config stands for it), in the studies' order; and the studies left out as duplicates."""
    chosen: dict[str, tuple[Study, pd.DataFrame]] = {}
    left_out = []
    for study, table in zip(studies, tables):
        if not len(table) or not (table["n"] > 0).any():
            continue
        key = json.dumps(context_config(study), sort_keys=True, default=str)
        if key in chosen:
            left_out.append(study)
        else:
            chosen[key] = (study, table)
    configs = [context_config(s) for s, _ in chosen.values()]
    keys = sorted({k for c in configs for k in c})
    differing = [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1
                 and not same_choice(k, configs)]
    contexts = [Context(override_name(s) or made_label(s, differing), s, t) for s, t in chosen.values()]
    labels = [c.label for c in contexts]
    for c in contexts:  # two contexts with one name (e.g. the same preset in two sweeps): told apart by the sweep
        if labels.count(c.label) > 1:
            c.label += f" ({c.study.runs[0].sweep or c.study.slug})"
    return contexts, left_out


def same_choice(key: str, configs: list[dict[str, object]]) -> bool:
    """A setting of a group whose choice (data.name, trunk.name) differs too follows from that choice: not named."""
    group = key.split(".", 1)[0]
    return key != f"{group}.name" and len({str(c.get(f"{group}.name")) for c in configs}) > 1

