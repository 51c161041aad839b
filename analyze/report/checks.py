"""Warnings a study's numbers call for, shown under its section and on stdout: accuracies identical across seeds
(the seed reached neither the initialisation nor the data order, or the records are copies), accuracies near
chance (nothing was learned, so the ranking is noise), timings taken on a loaded machine or with different allocator
settings."""
from __future__ import annotations

import math
from collections import Counter

from experiments.sanity import NEAR_CHANCE, load_warning, loaded, near_chance

from .studies import Study, stem_labels


def num_classes(run) -> int | None:
    value = (run.record.get("model") or {}).get("num_classes") or (run.config.get("data") or {}).get("num_classes")
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


def study_warnings(study: Study) -> list[str]:
    out = []
    labels = stem_labels(study.runs)
    by_stem: dict[str, list] = {}
    for run in study.runs:
        if run.status == "completed" and math.isfinite(run.metric("valid_acc")):
            by_stem.setdefault(labels[id(run)], []).append(run)
    for stem, runs in sorted(by_stem.items()):
        accs = [r.metric("valid_acc") for r in runs]
        if len({r.seed for r in runs}) > 1 and len(set(accs)) == 1:
            out.append(f"`{stem}`: the same accuracy ({100 * accs[0]:.2f} %) at every one of its {len(runs)} seeds; "
                       "check that the seed changes the initialisation and the data order, and that the records are not copies.")
        classes = num_classes(runs[0])
        mean = sum(accs) / len(accs)
        if near_chance(mean, classes):
            out.append(f"`{stem}`: mean accuracy {100 * mean:.2f} % is near chance ({100 / classes:.2f} % for {classes} "
                       f"classes; warned at ≤ {NEAR_CHANCE:g}x chance): it has barely learned, so its place in the ranking is noise.")
    busy = [r for r in study.runs if loaded((r.record.get("hardware") or {}).get("load"))]
    if busy:
        worst = max(busy, key=lambda r: r.record["hardware"]["load"]["load_avg"]).record["hardware"]["load"]
        out.append(f"{len(busy)} of {len(study.runs)} runs had their {load_warning(worst)} (the worst shown).")
    # older records lack the key: beside records that have one, they count as a different setting (a study of
    # mixed formats or thread counts is refused whole: analyze/report/pairing.py)
    allocators = recorded(study, "allocator")
    if len(allocators) > 1:
        counts = "; ".join(f"{runs} with {what}" if what else f"{runs} not recorded" for what, runs in allocators)
        out.append(f"The runs' allocators treated freed memory differently ({counts}): big activations mapped afresh "
                   "every step slow a CPU step, so compare ms per step and img/s only between runs of one allocator.")
    return out


def recorded(study: Study, key: str) -> list[tuple]:
    """(value of hardware.`key`, runs) sorted, the runs without it as (None, runs) last; [] when no run has it."""
    counts = Counter((r.record.get("hardware") or {}).get(key) for r in study.runs)
    if set(counts) == {None}:
        return []
    return sorted(counts.items(), key=lambda item: (item[0] is None, str(item[0])))


def warnings_section(study: Study) -> list[str]:
    """The study's warnings as a markdown section (nothing when there are none)."""
    found = study_warnings(study)
    return ["### Warnings", "", *[f"- {w}" for w in found], ""] if found else []
