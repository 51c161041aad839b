"""``python -m analyze report DIR [--with DIR ...] [--out DIR] [--wandb PROJECT [--group G]]``: the stem study's answer.

Reads every result record under DIR and each ``--with`` folder (recursively; or W&B runs with ``--wandb``), splits
them into studies (records whose config differs only in the stem and the seed; mixed trunks, datasets or settings are
never averaged together), and writes ``report.md`` with PNG figures beside it: per stem the accuracy over seeds with
its 95 % CI, the paired comparison with the reference stem (Bonferroni-adjusted p and interval, equivalence, P(best),
accuracy within the reference's time, the study's power), the costs, accuracy vs cost with the Pareto front, compute
by depth, training curves, the LR tuning of a tuned study, provenance, and the missing, failed and skipped points.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from importlib import import_module
from pathlib import Path
from typing import Any, Callable

from stems.base import atomic_write, output_folder


def help_text(doc: str | None) -> str | None:
    """A module docstring's second paragraph as argparse help: plain text, without RST's double backquotes."""
    return doc.split("\n\n")[1].replace("``", "") if doc else None


def add_report_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="compare the stems of a sweep: report.md with figures", description=help_text(__doc__))
    p.add_argument("dir", help="the sweep directory (its result records are read recursively); with --wandb, where to write")
    p.add_argument("--with", dest="also", metavar="DIR", action="append", default=[],
                   help="also read the records under this folder (another sweep, e.g. one that ran a context of this "
                   "study's comparison across contexts); repeatable")
    p.add_argument("--out", default=None, help="where report.md and the figures go (default: DIR)")
    p.add_argument("--wandb", metavar="PROJECT", default=None, help="read the runs of this W&B project (entity/project) instead")
    p.add_argument("--group", default=None, help="with --wandb: only this W&B group (a sweep)")
    p.set_defaults(func=run_report)


def lazy(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    """A command's `func` that imports its module when the command runs, not when the parser is built."""
    return lambda args: getattr(import_module(module), function)(args)


def add_space_parser(sub: Any) -> None:
    """`space`: its parser here (light), its code in analyze.report.space (numpy, pandas, matplotlib)."""
    p = sub.add_parser("space", help="analyse a stem design-space sweep: error EDFs by design choice",
                       description="Reads the runs of a hydra/sweeper=space sweep and writes space.md with figures (the "
                       "error EDF of all sampled stems with its 95 % DKW band, the EDFs and a table per design choice, "
                       "error against train-step time and FLOPs with the Pareto front) and stems.yaml (the best sampled "
                       "stems as named points, for stems/points/).")
    p.add_argument("dir", help="the design-space sweep directory (python train.py -m hydra/sweeper=space ...)")
    p.add_argument("--out", default=None, help="where space.md, the figures and stems.yaml go (default: DIR)")
    p.add_argument("--export", type=int, default=3, help="how many of the best stems stems.yaml names (default 3)")
    p.set_defaults(func=lazy("analyze.report.space", "run_space"))


def run_report(args: argparse.Namespace) -> int:
    from .across import across_contexts
    from .checks import study_warnings
    from .comparison import power
    from .data import read_records
    from .figures import write_figures
    from .pairing import check_one_format
    from .render import markdown_table, next_step, render
    from .stage_costs import write_stage_roofline
    from .statistics import reference_of, stem_table, tuning_table
    from .studies import split_studies
    from .wandb_runs import read_wandb

    root = Path(args.dir)
    inputs = read_wandb(args.wandb, args.group) if args.wandb else read_records(root)
    for folder in args.also:
        inputs.add(read_records(Path(folder)))
    studies = split_studies(inputs.runs)
    for study in studies:  # before anything is written: a study of mixed formats is refused whole
        check_one_format(study)
    out = output_folder(Path(args.out)) if args.out else root
    sweeps = {r.sweep for r in inputs.runs if r.sweep}
    if len(sweeps) > 1:  # a folder of several sweeps: split, never pooled
        print(f"{root} holds {len(sweeps)} sweeps; each is reported as a study of its own.")
    tables = [stem_table(s) for s in studies]
    tunings = [tuning_table(s) if s.tuning else None for s in studies]
    figures = [write_figures(s, t, tu, out) for s, t, tu in zip(studies, tables, tunings)]
    for figs, s, t in zip(figures, studies, tables):  # the per-stage roofline (analyze/report/stage_costs.py)
        figs.update(write_stage_roofline(s, list(t.loc[t["n"] > 0, "stem"]), out))
    command = shlex.join(["python", "-m", "analyze", "report", *sys.argv[2:]]) if sys.argv[1:2] == ["report"] else \
        shlex.join(["python", "-m", "analyze", "report", args.dir, *(x for d in args.also for x in ("--with", d)),
                    *(["--out", args.out] if args.out else [])])
    across = across_contexts(studies, tables, out)  # records that span 2+ contexts (issue 20)
    atomic_write(out / "report.md", render(inputs, studies, tables, tunings, figures, command, across.lines if across else []))
    for study, table in zip(studies, tables):
        if len(table):
            print(f"\n{study.label}\n\n{markdown_table(table)}")
            margin = reference_of(study, table)[2]
            for line in next_step(study, table, power(table, margin / 100), margin, command)[:1]:
                print(f"\n{line}")
        for warning in study_warnings(study):
            print(f"warning: {warning}")
    if across:
        print("\n" + "\n".join(across.summary))
    if inputs.missing or inputs.unfinished or inputs.skipped or inputs.incomplete:
        print(f"\n{len(inputs.missing)} missing, {len(inputs.unfinished)} unfinished, {len(inputs.skipped)} skipped points, "
              f"{len(inputs.incomplete)} unreadable tables (listed in the report).")
    print(f"\nwrote {out / 'report.md'} and {sum(len(f) for f in figures) + bool(across)} figures")
    return 0
