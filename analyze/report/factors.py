"""Universality one factor at a time: the base context every other context is measured from, the factor each other
context changes (resolution, budget, trunk, dataset, or the setting's own name), and per factor whether the ranking
moves along it: τ between the base's ranking and the context's with its bootstrap interval, the interaction test of
the two contexts, the comparison's own rule (universality.rule_outcome), and which stems change place or verdict."""
from __future__ import annotations

import json
from dataclasses import dataclass

from .contexts import Context, context_config, image_size
from .statistics import newest_compare
from .universality import (Interaction, Tau, agreements, interaction, movers, rankings, rule_outcome, same_ranking_threshold,
                           taus)

FACTORS = {"data.image_size": "resolution", "train.epochs": "budget", "trunk": "trunk", "data": "dataset"}
WHOLE_GROUP = ("trunk",)  # every setting of these groups is one factor, its name changed or not


def differing_keys(a: dict[str, object], b: dict[str, object]) -> list[str]:
    """The flattened settings whose values differ between two context configs."""
    return sorted(k for k in set(a) | set(b) if json.dumps(a.get(k), default=str) != json.dumps(b.get(k), default=str))


def factors_between(a: dict[str, object], b: dict[str, object]) -> list[str]:
    """The factors two contexts differ in: a group whose choice differs (data.name, trunk.name) is one factor with
    every setting that follows from that choice (MNIST's own image size moves with the dataset); other settings are
    named by FACTORS, else by their key."""
    keys = differing_keys(a, b)
    chosen = {k.split(".", 1)[0] for k in keys if k.endswith(".name") and k.count(".") == 1}
    out = set()
    for k in keys:
        group = k.split(".", 1)[0]
        whole = group in chosen or group in WHOLE_GROUP
        out.add(FACTORS.get(group, group) if whole else FACTORS.get(k, k))
    return sorted(out)


@dataclass(frozen=True)
class Base:
    index: int
    why: str  # how it was chosen, for the report


def base_context(contexts: list[Context], configs: list[dict[str, object]]) -> Base:
    """`compare.base_context` when it names one of the contexts, else the context from which the most others
    differ in exactly one factor (the first in the report's order on a tie)."""
    named = newest_compare([r for c in contexts for r in c.study.runs]).get("base_context")
    labels = [c.label for c in contexts]
    if named in labels:
        return Base(labels.index(named), "named by `compare.base_context`")
    neighbours = [sum(len(factors_between(configs[i], configs[j])) == 1 for j in range(len(contexts)) if j != i)
                  for i in range(len(contexts))]
    index = neighbours.index(max(neighbours))
    chosen = f"the context from which {neighbours[index]} of the other {len(contexts) - 1} differ in one factor"
    if named:
        return Base(index, f"`compare.base_context` names {named}, which has no completed runs here; {chosen}")
    return Base(index, chosen)


@dataclass
class Factor:
    context: Context
    names: list[str]       # the factors the context differs in from the base (exactly one for an answer)
    change: str            # e.g. "32 px → 64 px"
    tau: Tau | None        # the base (a = 0) against the context (b = 1)
    test: Interaction | None
    outcome: str           # universality.rule_outcome of the two contexts
    moved: list[tuple[str, int, int]]    # (stem, place in the base, place in the context) where they differ
    flipped: list[tuple[str, str, str]]  # (stem, verdict kind in the base, in the context) where they differ


def change_text(name: str, base: Context, other: Context, a: dict[str, object], b: dict[str, object]) -> str:
    if name == "resolution":
        return f"{image_size(base.study)} px → {image_size(other.study)} px"
    if name == "budget":
        return f"{a.get('train.epochs')} → {b.get('train.epochs')} epochs"
    if name == "dataset":
        return (f"{a.get('data.name')} at {image_size(base.study)} px → "
                f"{b.get('data.name')} at {image_size(other.study)} px")
    if name == "trunk" and a.get("trunk.name") != b.get("trunk.name"):
        return f"{a.get('trunk.name')} → {b.get('trunk.name')}"
    keys = [k for k in differing_keys(a, b) if factors_between({k: a.get(k)}, {k: b.get(k)}) == [name]]
    return "; ".join(f"{k}: {a.get(k)} → {b.get(k)}" for k in keys)


def by_factor(contexts: list[Context]) -> tuple[Base, list[Factor]]:
    """The base and, for every other context, its factors and (when it differs in exactly one) the answer along it."""
    configs = [context_config(c.study) for c in contexts]
    base = base_context(contexts, configs)
    threshold = same_ranking_threshold(contexts)
    out = []
    for j, other in enumerate(contexts):
        if j == base.index:
            continue
        names = factors_between(configs[base.index], configs[j])
        change = "; ".join(change_text(n, contexts[base.index], other, configs[base.index], configs[j]) for n in names)
        if len(names) != 1:
            out.append(Factor(other, names, change, None, None, "none", [], []))
            continue
        pair = [contexts[base.index], other]
        rank = rankings(pair)
        tau = taus(rank)[0]
        test = interaction(pair)
        stems, places = movers(rank)
        moved = [(s, int(p0), int(p1)) for s, p0, p1 in zip(stems, *places) if p0 != p1] if places else []
        flipped = [(a.stem, *a.kinds) for a in agreements(pair) if a.kinds[0] != a.kinds[1]]
        out.append(Factor(other, names, change, tau, test, rule_outcome([tau], test, threshold), moved, flipped))
    return base, out

