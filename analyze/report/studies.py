"""Splitting records into studies: runs of one sweep whose config differs only in the stem and the seed.

Two sweeps are never pooled (a folder of several is split: each run knows its sweep from Hydra's multirun.yaml,
data.label_sweeps), and a run of a sweep that is not tuned never joins a tuned study, whatever its LR.

Mixed trunks, datasets or settings are never averaged together; headings name the settings that tell two
studies apart (e.g. `train.lr=0.01`). A tuned study (issue 12's protocol) has two stages: the tuning stage's
records carry `data.tune_split: true` and differ in `train.lr`; the final stage's records train each stem
at its chosen LR on the full training set. Both stages of one study land in one `Study`."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from experiments.same_run import same_run_config

from .data import Run

VARIES_IN_A_STUDY = ("stem", "seed")  # what a study compares; what makes no different run: experiments.same_run
STAGE_KEYS = (("data", "tune_split"),)           # which stage a record belongs to, not which study
PER_STEM_IN_TUNED = (("train", "lr"),)           # chosen per stem in a tuned study


@dataclass
class Study:
    """The final (or only) stage's runs, the tuning stage's runs when the study was tuned, and the shared config."""

    label: str
    slug: str
    config: dict[str, Any]
    runs: list[Run]
    tuning: list[Run] = field(default_factory=list)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists as their JSON text, so values compare and print."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, list) else v
    return out


def study_config(run: Run, tuned: bool) -> dict[str, Any]:
    """The run's config without what varies inside a study (and without the LR when the study is tuned)."""
    config = {k: v for k, v in same_run_config(run.config).items() if k not in VARIES_IN_A_STUDY}
    for group, key in STAGE_KEYS + (PER_STEM_IN_TUNED if tuned else ()):
        (config.get(group) or {}).pop(key, None)
    return config


def _key(run: Run, tuned: bool) -> str:
    """What tells a study apart: its sweep (when known) and its config (without what varies inside it)."""
    return json.dumps([run.sweep, study_config(run, tuned)], sort_keys=True, default=str)


def split_studies(runs: list[Run]) -> list[Study]:
    """Studies, largest first: one per sweep and config. A tuning stage joins the final stage that shares its sweep
    and config (LR aside); a run of a sweep that is not tuned (a fixed-LR point) never joins a tuned study."""
    tuned = {_key(r, tuned=True) for r in runs if r.tuning}
    final: dict[str, list[Run]] = {}
    tuning: dict[str, list[Run]] = {}
    for run in runs:
        key = _key(run, tuned=True)
        if run.tuning:
            tuning.setdefault(key, []).append(run)
        else:
            joins = key in tuned and run.sweeper in (None, "tuned")  # None: no multirun.yaml says (e.g. W&B runs)
            final.setdefault(key if joins else _key(run, tuned=False), []).append(run)
    keys = sorted(set(final) | set(tuning), key=lambda k: (-len(final.get(k, [])), -len(tuning.get(k, [])), k))
    sweeps = {k: json.loads(k)[0] for k in keys}
    configs = {k: flatten(json.loads(k)[1]) for k in keys}
    studies = []
    for key in keys:
        c = configs[key]
        base = f"{c.get('trunk.name')} · {c.get('data.name')}" + (f" @ {c['data.image_size']} px" if c.get("data.image_size") else "")
        same_base = [configs[k] for k in keys if k != key and (configs[k].get("trunk.name"), configs[k].get("data.name"))
                     == (c.get("trunk.name"), c.get("data.name"))]
        shown = {"data.image_size"} if c.get("data.image_size") else set()  # already in `base`
        differing = sorted({f for o in same_base for f in set(c) | set(o)
                            if f in c and f not in shown and c.get(f) != o.get(f)})
        label = base + (" · tuned LR per stem" if key in tuning else "") \
            + ("".join(f" · {f}={c.get(f)}" for f in differing[:4]) + (" …" if len(differing) > 4 else "")) \
            + (f" · sweep {sweeps[key]}" if sweeps[key] and len(set(sweeps.values())) > 1 else "")
        slug = "".join(ch if ch.isalnum() else "_" for ch in f"{c.get('trunk.name')}_{c.get('data.name')}")
        studies.append(Study(label, slug, json.loads(key)[1], final.get(key, []), tuning.get(key, [])))
    seen: Counter[str] = Counter()
    for s in studies:  # unique figure names when two studies share trunk and dataset
        seen[s.slug] += 1
        if seen[s.slug] > 1:
            s.slug += f"_{seen[s.slug]}"
    return studies


def stem_labels(runs: list[Run]) -> dict[int, str]:
    """Each run's stem label (by id(run)): its name, plus the stem parameters that differ between runs of that name."""
    by_name: dict[str, list[Run]] = {}
    for r in runs:
        by_name.setdefault(r.stem, []).append(r)
    labels = {}
    for name, rs in by_name.items():
        flat = [flatten({k: v for k, v in r.config.get("stem", {}).items() if k != "name"}) for r in rs]
        varying = sorted({k for f in flat for k in f if any(g.get(k) != f.get(k) for g in flat)})
        for r, f in zip(rs, flat):
            labels[id(r)] = name + (f" ({', '.join(f'{k}={f.get(k)}' for k in varying)})" if varying else "")
    return labels
