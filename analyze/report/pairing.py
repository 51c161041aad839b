"""What a study's comparisons rest on, read from the records rather than assumed: one format for all its runs (a
treatment, so a report never compares across formats), whether the stems at each seed shared their trunk
initialisation and data order (the records' pairing digests, experiments/streams.py), and how the validation data
was drawn."""
from __future__ import annotations

from collections import defaultdict

from .data import ReportError
from .studies import Study

FORMAT_KEYS = ("precision", "channels_last", "threads")


def run_format(run) -> tuple:
    hw = run.record.get("hardware") or {}
    return tuple(hw.get(k) for k in FORMAT_KEYS)


def format_text(fmt: tuple) -> str:
    return ", ".join(f"{k} {'not recorded' if v is None else v}" for k, v in zip(FORMAT_KEYS, fmt))


def check_one_format(study: Study) -> None:
    """Refuse a study whose runs trained in different formats, naming them (precision and memory layout change what
    a stem learns and how fast it runs; a study extended under another thread count is timed differently)."""
    by_format: dict[tuple, list] = defaultdict(list)
    for run in study.runs + study.tuning:
        by_format[run_format(run)].append(run)
    if len(by_format) > 1:
        groups = "; ".join(f"{len(runs)} in {format_text(fmt)} (e.g. {runs[0].source})"
                           for fmt, runs in sorted(by_format.items(), key=lambda kv: (-len(kv[1]), format_text(kv[0]))))
        raise ReportError(f"the runs of study '{study.label}' trained in different formats ({groups}), so their "
                          f"comparison would mix a treatment with the stems; re-run the odd runs in the study's format "
                          f"(a sweep keeps one in its study_format.json) or report them as separate studies.")


def pairing_line(runs: list) -> str:
    """'Paired: …' when at every seed the stems' records carry the same trunk and data-order digests; else which
    runs differ (or that the records predate the digests)."""
    by_seed: dict = defaultdict(list)
    for run in runs:
        by_seed[run.seed].append(run)
    unrecorded = [r for r in runs if not r.record.get("pairing")]
    if unrecorded:
        return (f"Pairing: not recorded for {len(unrecorded)} of {len(runs)} runs (records before the pairing digests), "
                "so whether the stems at a seed shared their initialisation is unknown; they shared the data order.")
    differ = []
    for seed, at_seed in sorted(by_seed.items(), key=lambda kv: str(kv[0])):
        for key, what in (("trunk_init", "trunk init"), ("data_order", "data order")):
            values = defaultdict(list)
            for r in at_seed:
                values[r.record["pairing"][key]].append(r.stem)
            if len(values) > 1:
                differ.append(f"seed {seed}, {what}: " + " vs ".join(f"{', '.join(sorted(s))} ({d})" for d, s in values.items()))
    if differ:
        return "Pairing: **not paired**; the stems' digests differ at " + "; ".join(differ) + "."
    return ("Pairing: paired (trunk init and data order shared): at every seed the stems started from the same trunk "
            "and head weights and saw the same batches (equal digests in every record).")


def split_line(runs: list) -> str:
    """How the validation data was drawn, from the records' `data`."""
    infos = [r.record.get("data") or {} for r in runs]
    kinds = {(i.get("valid_split"), i.get("valid_source"), i.get("split"), i.get("split_seed")) for i in infos}
    if len(kinds) != 1 or None in next(iter(kinds))[1:3]:
        return "Validation data: not recorded the same way by every run."
    valid_split, source, split, split_seed = kinds.pop()
    drawn = "one per seed (`data.split_by_seed`), shared by the stems at that seed" if split == "per seed" \
        else f"fixed for the whole study (`data.split_seed` {split_seed})"
    if valid_split == "tune":
        return f"Validation data: a stratified tuning split carved from the training set, {drawn}."
    if source == "carved":
        return f"Validation data: a stratified split carved from the dataset, {drawn}."
    return f"Validation data: the dataset's {source} validation set, the same for every run."
