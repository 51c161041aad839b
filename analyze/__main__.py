"""``python -m analyze COMMAND …``

``profile``: the per-layer cost profile of the model a training run would build, from the same
Hydra config as ``train.py``::

    python -m analyze profile stem=resnet_7x7 trunk=xresnet50 data=synthetic data.image_size=128 \\
        profile.batch_size=8 [--device cpu] [--threads 1] [--out DIR]

prints a grouped table (with shares) and writes ``layers.csv``, ``groups.csv``, ``totals.json``,
``shares.png`` and ``roofline.png`` to the output directory.  Each command is one subparser
(``add_<command>_parser``), so another (``report``) plugs in the same way.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from analyze.dashboard import add_dashboard_parser

Command = Callable[[argparse.Namespace], int]


# ---------------------------------------------------------------------------------------------
# profile


def add_profile_parser(sub: Any) -> None:
    p = sub.add_parser(
        "profile",
        help="per-layer FLOPs, bytes and time of a configured model",
        description="Per-layer cost profile of the model `python train.py OVERRIDES` would build. "
        "Times the layers unless profile.latency=false (the CLI treats 'auto' as true).",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py (stem=… trunk=… data=… profile.batch_size=…)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=["bf16", "fp16"], help="autocast precision (default: none, fp32)")
    p.add_argument("--channels-last", action="store_true", help="model and input in channels_last")
    p.add_argument("--threads", type=int, default=None, help="CPU threads while timing (1 = steadiest on a shared machine)")
    p.add_argument("--repeats", type=int, default=5, help="profiled steps (per-layer medians)")
    p.add_argument("--layers", action="store_true", help="also print the per-layer table")
    p.add_argument("--out", default=None, help="output directory (default: outputs/profile/STEM_TRUNK_DATA_SIZE)")
    p.set_defaults(func=run_profile)


def compose(overrides: Sequence[str]) -> Any:
    """The config train.py would run with these overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from experiments.config import CONF_DIR, check_overrides, register_configs

    register_configs()
    check_overrides(list(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose(config_name="config", overrides=list(overrides))


def build_for_profile(cfg: Any) -> tuple[Any, tuple[int, int, int, int]]:
    """The run's model and the profiled input shape (batch: profile.batch_size, else train.bs)."""
    import torch

    from experiments.data import build_data
    from experiments.model import build_model

    batch = int(cfg.profile.batch_size or cfg.train.bs)
    data = build_data(cfg.data, bs=batch, seed=int(cfg.seed), device=torch.device("cpu"))
    model = build_model(cfg.stem, cfg.trunk, data.in_channels, data.num_classes, image_size=data.image_size)
    return model, (batch, data.in_channels, data.image_size, data.image_size)


def _fmt(v: float, unit: float = 1.0, digits: int = 1) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v / unit:,.{digits}f}"


def _pct(v: float) -> str:
    return "–" if v is None or math.isnan(v) else f"{100 * v:.1f} %"


def render_groups(profile: Any, title: str) -> Any:
    """A rich table: one row per group, FLOPs and time with their shares, forward and train."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in ["group", "params", "MFLOPs fwd", "FLOPs %", "FLOPs % train", "MB moved", "FLOP/B",
                "ms fwd", "time %", "ms bwd", "time % train"]:
        t.add_column(col, justify="left" if col == "group" else "right")
    for _, r in profile.groups.iterrows():
        if r["group"] == "total":
            t.add_section()
        t.add_row(str(r["group"]), f"{int(r['params']):,}", _fmt(r["flops_fwd"], 1e6), _pct(r["share_flops"]),
                  _pct(r["share_flops_train"]), _fmt(r["bytes_moved"], 1e6), _fmt(r["intensity"]),
                  _fmt(r["ms_fwd"], 1, 2), _pct(r["share_time"]), _fmt(r["ms_bwd"], 1, 2), _pct(r["share_time_train"]))
    return t


def render_layers(profile: Any) -> Any:
    from rich.table import Table

    t = Table(title="layers", title_justify="left")
    for col in ["#", "name", "kind", "out", "MFLOPs fwd", "MFLOPs bwd", "FLOPs %", "ms fwd", "ms bwd", "time %"]:
        t.add_column(col, justify="left" if col in ("name", "kind", "out") else "right")
    for i, r in profile.layers.iterrows():
        out = "×".join(map(str, r["out_shape"][1:])) if isinstance(r["out_shape"], tuple) and r["out_shape"] and isinstance(r["out_shape"][0], int) else str(r["out_shape"])
        t.add_row(str(i), r["name"], r["kind"], out, _fmt(r["flops_fwd"], 1e6, 2), _fmt(r["flops_bwd"], 1e6, 2),
                  _pct(r["share_flops"]), _fmt(r["ms_fwd"], 1, 3), _fmt(r["ms_bwd"], 1, 3), _pct(r["share_time"]))
    return t


def summary_lines(totals: dict[str, float]) -> list[str]:
    lines = [f"params {totals['params']:,.0f} · forward {totals['flops_fwd'] / 1e9:.3f} GFLOPs "
             f"({totals['macs'] / 1e9:.3f} GMACs) · backward {totals['flops_bwd'] / 1e9:.3f} GFLOPs"]
    if not math.isnan(totals.get("ms_fwd_e2e", math.nan)):
        lines.append(f"forward: per-layer sum {totals['ms_fwd']:.2f} ms vs end-to-end {totals['ms_fwd_e2e']:.2f} ms "
                     f"(gap {100 * totals['gap_fwd']:+.1f} %)")
    if not math.isnan(totals.get("ms_train_step_e2e", math.nan)):
        lines.append(f"train step: per-layer sum {totals['ms_fwd'] + totals['ms_bwd']:.2f} ms vs end-to-end "
                     f"{totals['ms_train_step_e2e']:.2f} ms (gap {100 * totals['gap_train']:+.1f} %)")
    if not math.isnan(totals.get("stem_share_flops", math.nan)):
        lines.append(f"stem: {_pct(totals['stem_share_flops'])} of forward FLOPs, {_pct(totals['stem_share_time'])} of "
                     f"forward time; {_pct(totals['stem_share_flops_train'])} / {_pct(totals['stem_share_time_train'])} "
                     "of a training step's")
    return lines


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    tmp.replace(path)


def write_outputs(profile: Any, out: Path) -> list[Path]:
    """layers.csv, groups.csv, totals.json and the two plots; each file written whole or not at all."""
    from analyze.plots import plot_roofline, plot_shares

    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "layers.csv", lambda p: profile.layers.to_csv(p, index=False))
    _write_atomic(out / "groups.csv", lambda p: profile.groups.to_csv(p, index=False))
    _write_atomic(out / "totals.json", lambda p: p.write_text(json.dumps(
        {"totals": profile.totals, "meta": profile.meta}, indent=1, default=str)))
    made = [out / "layers.csv", out / "groups.csv", out / "totals.json"]
    for name, plot in [("shares.png", plot_shares), ("roofline.png", plot_roofline)]:
        tmp = out / f".{os.getpid()}.{name}"
        if plot(profile, tmp) is not None:
            tmp.replace(out / name)
            made.append(out / name)
    return made


def run_profile(args: argparse.Namespace) -> int:
    import time

    import torch
    from rich.console import Console

    from analyze.profile import profile_model

    console = Console(width=None if sys.stdout.isatty() else 150)
    cfg = compose(args.overrides)
    model, shape = build_for_profile(cfg)
    latency = str(cfg.profile.latency).lower() != "false"
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[args.dtype]
    t0 = time.perf_counter()
    profile = profile_model(model, shape, device=device, latency=latency, backward=True, dtype=dtype,
                            channels_last=args.channels_last, threads=args.threads, repeats=args.repeats)
    took = time.perf_counter() - t0
    title = (f"{cfg.stem.name} + {cfg.trunk.name} · input {shape} · {profile.meta['device']}"
             + (f" · {args.dtype}" if args.dtype else "") + (f" · {args.threads} thread(s)" if args.threads else ""))
    if args.layers:
        console.print(render_layers(profile))
    console.print(render_groups(profile, title))
    for line in summary_lines(profile.totals):
        console.print(line)
    out = Path(args.out or Path("outputs") / "profile" / f"{cfg.stem.name}_{cfg.trunk.name}_{cfg.data.name}_{shape[-1]}")
    made = write_outputs(profile, out)
    console.print(f"profiled in {took:.1f} s; wrote {', '.join(p.name for p in made)} to {out}")
    return 0


# ---------------------------------------------------------------------------------------------
# entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analyze", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_profile_parser(sub)
    from analyze.report import add_report_parser

    add_report_parser(sub)
    add_dashboard_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:  # ProfileError, ConfigError, DataError, StemError, TrunkError: one sentence each
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
