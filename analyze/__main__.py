"""python -m analyze COMMAND ...: profile a configured model, report a sweep, analyse a design space, make a dashboard.

profile: the per-layer cost profile of the model a training run would build, made as the run makes it (same
Hydra config and overrides as train.py: model, data, batch, device, precision):

    python -m analyze profile stem=resnet_7x7 trunk=xresnet50 data=synthetic data.image_size=128 \\
        train.bs=8 [train.device=cpu] [profile.budget_s=10] [--threads 1] [--layers] [--out DIR]

says what it is doing as it goes (on stderr), prints a grouped table (with shares) and writes layers.csv,
groups.csv, totals.json, shares.png and roofline.png to the output directory. report (analyze.report.cli),
space (analyze.report.space), readme (analyze.report.readme), evaluate and export (analyze.evaluate) and dashboard (analyze.dashboard) plug in
the same way: each command is one subparser (add_<command>_parser) whose func runs it. The parsers import
nothing heavy (torch, fastai, matplotlib load when a command runs), so every --help answers at once.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analyze.config_docs import add_config_docs_parser
from analyze.dashboard import add_dashboard_parser
from analyze.evaluate import add_evaluate_parser, add_export_parser
from analyze.report.cli import add_report_parser, add_space_parser
from analyze.report.readme import add_readme_parser
from analyze.shapes.cli import add_shapes_parser  # light: the command imports torch and the profiler when it runs
from stems.base import StemlabError, atomic_write

if TYPE_CHECKING:
    from rich.table import Table

    from profiler import Profile

STARTED = time.perf_counter()  # the command's start (its imports are light): what "done in" counts from

# ---------------------------------------------------------------------------------------------
# profile


def add_profile_parser(sub: Any) -> None:
    p = sub.add_parser(
        "profile",
        help="per-layer FLOPs, bytes and time of a configured model",
        description="Per-layer cost profile of the model `python train.py OVERRIDES` would build, on its "
        "training device, batch size and precision. Times the layers unless profile.latency=false.",
    )
    p.add_argument("overrides", nargs="*",
                   help="Hydra overrides, as for train.py (stem=… trunk=… data=… data.image_size=… train.bs=… "
                        "train.device=… profile.batch_size=… profile.budget_s=…)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads while timing (1 = steadiest on a shared machine)")
    p.add_argument("--layers", action="store_true", help="also print the per-layer table")
    p.add_argument("--out", default=None, help="output directory (default: outputs/profile/STEM_TRUNK_DATA_SIZE)")
    p.set_defaults(func=run_profile)


def compose(overrides: Sequence[str]) -> Any:
    """The config train.py would run with these overrides (checked: a bad setting raises ConfigError)."""
    from experiments.config import compose as compose_checked

    return compose_checked(list(overrides))


def _progress(message: str) -> None:
    print(f"[profile] {message}", file=sys.stderr, flush=True)


def profile_configured(cfg: Any, threads: int | None = None) -> Profile:
    """The profile a training run with `cfg` makes of its model (the run's own setup), saying each step on stderr."""
    import torch

    from experiments.setup import profile_run, set_up

    _progress(f"building data {cfg.data.name!r} and model {cfg.stem.name} + {cfg.trunk.name}")
    profile, _ = profile_run(set_up(cfg, data_device=torch.device("cpu")), cfg, threads=threads, progress=_progress)
    return profile


def _fmt(v: float, unit: float = 1.0, digits: int = 1) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v / unit:,.{digits}f}"


def _pct(v: float) -> str:
    return "–" if v is None or math.isnan(v) else f"{100 * v:.1f} %"


def render_groups(profile: Profile, title: str) -> Table:
    """A rich table: one row per group, FLOPs and time with their shares, forward and train; FLOPs, bytes and ms are
    of one step on the whole batch (the title says its size)."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in ["group", "params", "MFLOPs fwd", "FLOPs %", "FLOPs % train", "MB moved", "FLOP/B", "ms fwd", "time %",
                "ms bwd", "time % train"]:
        t.add_column(col, justify="left" if col == "group" else "right")
    for _, r in profile.groups.iterrows():
        if r["group"] == "total":
            t.add_section()
        t.add_row(str(r["group"]), f"{int(r['params']):,}", _fmt(r["flops_fwd"], 1e6), _pct(r["share_flops"]),
                  _pct(r["share_flops_train"]), _fmt(r["bytes_moved"], 1e6), _fmt(r["intensity"]),
                  _fmt(r["ms_fwd"], 1, 2), _pct(r["share_time"]), _fmt(r["ms_bwd"], 1, 2), _pct(r["share_time_train"]))
    return t


def render_layers(profile: Profile) -> Table:
    from rich.table import Table

    t = Table(title="layers (per batch)", title_justify="left")
    for col in ["#", "name", "kind", "out", "MFLOPs fwd", "MFLOPs bwd", "FLOPs %", "ms fwd", "ms bwd", "time %"]:
        t.add_column(col, justify="left" if col in ("name", "kind", "out") else "right")
    for i, r in profile.layers.iterrows():
        out = "×".join(map(str, r["out_shape"][1:])) if isinstance(r["out_shape"], tuple) and r["out_shape"] and isinstance(r["out_shape"][0], int) else str(r["out_shape"])
        t.add_row(str(i), r["name"], r["kind"], out, _fmt(r["flops_fwd"], 1e6, 2), _fmt(r["flops_bwd"], 1e6, 2),
                  _pct(r["share_flops"]), _fmt(r["ms_fwd"], 1, 3), _fmt(r["ms_bwd"], 1, 3), _pct(r["share_time"]))
    return t


GAP_EXPLAINED = 0.10  # a per-layer sum further than this from the end-to-end step gets a sentence on what it means


def gap_sentence(gap: float) -> str:
    """What a per-layer vs end-to-end gap beyond ±GAP_EXPLAINED means, and what to do (one sentence)."""
    if gap < 0:
        return (f"The layers account for only {100 * (1 + gap):.0f} % of the end-to-end step: the rest is spent "
                "between layers (autograd's bookkeeping, memory allocation, threads waiting, Python), so the time "
                "shares above are shares of the layers' time, not of the step; on a loaded machine or with many "
                "threads this grows, so re-run with --threads 1 on a quiet machine before reading them as the step's.")
    return (f"The per-layer sum is {100 * gap:.0f} % above the end-to-end step: the profiler's per-layer "
            "instrumentation costs time in every layer (most in many small ones), so read the shares as relative "
            "costs and take absolute speed from the end-to-end step (or a training run's ms / step).")


def summary_lines(totals: dict[str, float], batch: int) -> list[str]:
    lines = [f"params {totals['params']:,.0f} · per batch of {batch}: forward {totals['flops_fwd'] / 1e9:.3f} GFLOPs "
             f"({totals['macs'] / 1e9:.3f} GMACs), backward {totals['flops_bwd'] / 1e9:.3f} GFLOPs · per image: "
             f"forward {totals['flops_fwd'] / batch / 1e9:.4f} GFLOPs (as the training log gives it)"]
    gaps = []
    if not math.isnan(totals.get("ms_fwd_e2e", math.nan)):
        lines.append(f"forward: per-layer sum {totals['ms_fwd']:.2f} ms vs end-to-end {totals['ms_fwd_e2e']:.2f} ms "
                     f"(gap {100 * totals['gap_fwd']:+.1f} %)")
        gaps.append(totals["gap_fwd"])
    if not math.isnan(totals.get("ms_train_step_e2e", math.nan)):
        lines.append(f"train step: per-layer sum {totals['ms_fwd'] + totals['ms_bwd']:.2f} ms vs end-to-end "
                     f"{totals['ms_train_step_e2e']:.2f} ms (gap {100 * totals['gap_train']:+.1f} %)")
        gaps.append(totals["gap_train"])
    widest = max((g for g in gaps if math.isfinite(g)), key=abs, default=0.0)
    if abs(widest) > GAP_EXPLAINED:
        lines.append(gap_sentence(widest))
    if not math.isnan(totals.get("stem_share_flops", math.nan)):
        lines.append(f"stem: {_pct(totals['stem_share_flops'])} of forward FLOPs, {_pct(totals['stem_share_time'])} of "
                     f"forward time; {_pct(totals['stem_share_flops_train'])} / {_pct(totals['stem_share_time_train'])} "
                     "of a training step's")
    return lines


def write_outputs(profile: Profile, out: Path) -> list[Path]:
    """layers.csv, groups.csv, totals.json and the two plots; each file written whole or not at all."""
    from experiments.record import LAYERS_FILE
    from profiler.plots import save_plots

    out.mkdir(parents=True, exist_ok=True)
    made = [
        atomic_write(out / LAYERS_FILE, profile.layers.to_csv(index=False)),  # the columns a run's record has
        atomic_write(out / "groups.csv", profile.groups.to_csv(index=False)),
        atomic_write(out / "totals.json", json.dumps({"totals": profile.totals, "meta": profile.meta}, indent=1, default=str)),
    ]
    return made + save_plots(profile, out)


def run_profile(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 150)
    cfg = compose(args.overrides)
    profile = profile_configured(cfg, args.threads)
    meta = profile.meta
    batch = meta["input_shape"][0]
    title = (f"{cfg.stem.name} + {cfg.trunk.name} · input {meta['input_shape']} · {meta['device']}"
             + (f" · {meta['dtype']}" if meta["dtype"] else "") + f" · {meta['threads']} thread(s)\n"
             f"FLOPs, bytes and ms: per batch of {batch} images (÷ {batch} per image)")
    if args.layers:
        console.print(render_layers(profile))
    console.print(render_groups(profile, title))
    for line in summary_lines(profile.totals, batch):
        console.print(line)
    out = Path(args.out or Path("outputs") / "profile" / f"{cfg.stem.name}_{cfg.trunk.name}_{cfg.data.name}_{meta['input_shape'][-1]}")
    _progress(f"writing tables and plots to {out}")
    made = write_outputs(profile, out)
    console.print(f"wrote {', '.join(p.name for p in made)} to {out}")
    _progress(f"done in {time.perf_counter() - STARTED:.1f} s since the command started")
    return 0


# ---------------------------------------------------------------------------------------------
# entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analyze", description=__doc__.split("\n\n")[0],
                                     epilog="python -m analyze COMMAND --help describes each command.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_profile_parser(sub)
    add_report_parser(sub)
    add_space_parser(sub)
    add_evaluate_parser(sub)
    add_export_parser(sub)
    add_readme_parser(sub)
    add_config_docs_parser(sub)
    add_dashboard_parser(sub)
    add_shapes_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StemlabError as e:  # bad input (config, data, profile, report, dashboard): one sentence each
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
