"""``python -m analyze report DIR [--out DIR] [--wandb PROJECT [--group G]]``: the stem study's answer.

Reads every result record under DIR (recursively; or W&B runs with ``--wandb``), splits them into studies
(records whose config differs only in the stem and the seed; mixed trunks, datasets or settings are never
averaged together), and writes ``report.md`` with PNG figures beside it: per stem the accuracy over seeds
with its 95 % CI, the paired comparison with the reference stem (Bonferroni-adjusted p and interval, equivalence,
P(best), accuracy within the reference's time, the study's power), the
costs, accuracy vs cost with the Pareto front, compute by depth, training curves, the LR tuning of a tuned
study, provenance, and the missing, failed and skipped points.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from stems.base import atomic_write

from .data import read_records
from .figures import write_figures
from .render import markdown_table, render
from .statistics import stem_table, tuning_table
from .studies import split_studies
from .wandb_runs import read_wandb


def add_report_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="compare the stems of a sweep: report.md with figures",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("dir", help="the sweep directory (its result records are read recursively); with --wandb, where to write")
    p.add_argument("--out", default=None, help="where report.md and the figures go (default: DIR)")
    p.add_argument("--wandb", metavar="PROJECT", default=None, help="read the runs of this W&B project (entity/project) instead")
    p.add_argument("--group", default=None, help="with --wandb: only this W&B group (a sweep)")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    inputs = read_wandb(args.wandb, args.group) if args.wandb else read_records(root)
    out = Path(args.out) if args.out else root
    out.mkdir(parents=True, exist_ok=True)
    studies = split_studies(inputs.runs)
    tables = [stem_table(s) for s in studies]
    tunings = [tuning_table(s) if s.tuning else None for s in studies]
    figures = [write_figures(s, t, tu, out) for s, t, tu in zip(studies, tables, tunings)]
    command = shlex.join(["python", "-m", "analyze", "report", *sys.argv[2:]]) if sys.argv[1:2] == ["report"] else \
        shlex.join(["python", "-m", "analyze", "report", args.dir, *(["--out", args.out] if args.out else [])])
    atomic_write(out / "report.md", render(inputs, studies, tables, tunings, figures, command))
    for study, table in zip(studies, tables):
        if len(table):
            print(f"\n{study.label}\n\n{markdown_table(table, show_lr=bool(study.tuning))}")
    if inputs.missing or inputs.unfinished or inputs.skipped or inputs.incomplete:
        print(f"\n{len(inputs.missing)} missing, {len(inputs.unfinished)} unfinished, {len(inputs.skipped)} skipped points, "
              f"{len(inputs.incomplete)} unreadable tables (listed in the report).")
    print(f"\nwrote {out / 'report.md'} and {sum(len(f) for f in figures)} figures")
    return 0
