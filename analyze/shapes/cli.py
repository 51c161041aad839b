"""``python -m analyze shapes``: few filters on big maps, or many filters on small maps, at equal FLOPs.

Measures the layer families of :mod:`analyze.shapes.families` with the cost profiler and writes
``shapes.csv`` (one row per layer × batch × precision × memory format), ``shapes.json`` (settings,
machine, load, status), ``shapes.md`` and the figures of :mod:`analyze.shapes.figures` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from .families import FAMILIES, FORMATS, PRECISIONS, ShapesError, family_layers

__all__ = ["add_shapes_parser", "run_shapes", "TRAINING_BATCH"]

TRAINING_BATCH = 64  # train.bs's default (experiments/schema.py; a test keeps the two equal)


def add_shapes_parser(sub: Any) -> None:
    p = sub.add_parser(
        "shapes", help="single conv layers at equal FLOPs: few filters on big maps vs many on small ones",
        description="Time, FLOPs, bytes and achieved FLOP/s of single conv layers along a ladder of shapes with "
                    "channels × map size fixed (224²×16 … 7²×512), per family, precision, memory format and batch.")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--out", default=None, help="output directory (default outputs/shapes/DEVICE)")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), help=f"any of {', '.join(FAMILIES)} (default all)")
    p.add_argument("--precision", nargs="+", default=["fp32"], help=f"any of {', '.join(PRECISIONS)} (default fp32)")
    p.add_argument("--memory-format", nargs="+", default=["contiguous"],
                   help=f"any of {', '.join(FORMATS)} (default contiguous)")
    p.add_argument("--batch", type=int, default=TRAINING_BATCH, help=f"the training batch size (default {TRAINING_BATCH})")
    p.add_argument("--sweep", type=int, nargs="*", default=[1, 8], help="further batch sizes (default 1 8; none: no sweep)")
    p.add_argument("--budget-s", type=float, default=240.0,
                   help="seconds of measuring; layers left when it is spent are counted, not timed (default 240)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per layer at most (at least 2; default 5)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (1 = steadiest on a shared machine)")
    p.add_argument("--recalibrate", action="store_true", help="measure the device's peaks again (else the cached ones)")
    p.add_argument("--render-only", action="store_true",
                   help="measure nothing: redraw shapes.md and the figures from --out's shapes.csv and shapes.json")
    p.set_defaults(func=run_shapes)


def command_of(args: argparse.Namespace) -> str:
    """The full command, every option spelt out, so the report says exactly what regenerates it."""
    parts = ["python -m analyze shapes", "--device", args.device, "--out", str(args.out), "--families", *args.families,
             "--precision", *args.precision, "--memory-format", *args.memory_format, "--batch", str(args.batch),
             "--sweep", *map(str, args.sweep), "--budget-s", f"{args.budget_s:g}", "--repeats", str(args.repeats)]
    parts += ["--threads", str(args.threads)] if args.threads else []
    return " ".join(parts[:1] + [shlex.quote(p) for p in parts[1:]])


def bf16_support(dev: Any) -> str:
    """Whether `dev` computes bf16 natively, and how we know."""
    import torch

    if dev.type == "cuda":
        return "native" if torch.cuda.is_bf16_supported() else "not native (emulated)"
    try:
        flags = {f for line in open("/proc/cpuinfo") if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    return f"native ({', '.join(native)} in the CPU flags)" if native else "not native (no avx512_bf16 or amx_bf16 flag)"


def _check(args: argparse.Namespace) -> Any:
    """The torch device, once every option is valid; else ShapesError with one sentence."""
    import torch

    from profiler.runtime import resolve_device

    for fam in args.families:
        family_layers(fam)
    for name, given, allowed in (("precision", args.precision, PRECISIONS), ("memory format", args.memory_format, FORMATS)):
        bad = [g for g in given if g not in allowed]
        if bad:
            raise ShapesError(f"unknown {name} {bad[0]!r}; choose from {', '.join(allowed)}.")
    if min([args.batch, *args.sweep]) < 1 or args.repeats < 2 or args.budget_s <= 0 or (args.threads or 1) < 1:
        raise ShapesError("--batch and --sweep need positive sizes, --repeats at least 2, --budget-s and --threads "
                          "positive values.")
    try:
        dev = torch.device(args.device)
    except RuntimeError:
        raise ShapesError(f"unknown device {args.device!r}; use cpu or cuda[:N].") from None
    if dev.type not in ("cpu", "cuda"):
        raise ShapesError(f"device {args.device!r} is not supported here; use cpu or cuda[:N].")
    dev = resolve_device(dev)
    if dev.type == "cpu" and "fp16" in args.precision:
        raise ShapesError("fp16 is for CUDA devices (CPUs have no fp16 autocast for convs); use fp32 or bf16 on cpu.")
    return dev


def _earlier_runs(out: Path, settings: dict[str, Any]) -> list[dict[str, float]]:
    """Rows, seconds and load of each earlier invocation whose rows this one may reuse (same settings)."""
    try:
        earlier = json.loads((out / "shapes.json").read_text())
        return list(earlier.get("measured", [])) if earlier.get("settings") == settings else []
    except (OSError, ValueError, AttributeError):
        return []


def _say(message: str) -> None:
    print(f"[shapes] {message}", file=sys.stderr, flush=True)


def render_only(out: Path | None) -> int:
    """shapes.md and the figures again from a finished study's shapes.csv and shapes.json (the same bytes from the
    same files), with the command that measured them."""
    import pandas as pd

    from stems.base import atomic_write

    from .figures import save_figures
    from .report import render

    if out is None or not (out / "shapes.csv").is_file() or not (out / "shapes.json").is_file():
        raise ShapesError(f"--render-only needs --out to name a folder with shapes.csv and shapes.json "
                          f"(got {out}); run the measuring command once first.")
    try:
        rows, meta = pd.read_csv(out / "shapes.csv"), json.loads((out / "shapes.json").read_text())
        command, batch = meta["command"], int(meta["batch"])
    except (OSError, ValueError, KeyError, TypeError, pd.errors.ParserError) as e:
        raise ShapesError(f"{out} holds an unreadable shapes.csv or shapes.json ({type(e).__name__}); "
                          "measure again with the command in its shapes.md.") from None
    figures = [p.name for p in save_figures(rows, batch, out, meta)]
    atomic_write(out / "shapes.md", render(rows, meta, command, figures))
    print(f"redrew shapes.md{''.join(', ' + f for f in figures)} in {out} from its shapes.csv")
    return 0


def run_shapes(args: argparse.Namespace) -> int:
    if args.render_only:
        return render_only(Path(args.out) if args.out else None)
    # imported here, so that `python -m analyze --help` does not load torch, pandas and matplotlib
    from experiments.allocator import keep_freed_memory
    from profiler.calibrate import peaks
    from profiler.runtime import num_threads
    from stems.base import atomic_write

    from .figures import save_figures
    from .measure import DTYPES, Settings, measure_all, plan, reusable, write_meta
    from .report import render

    dev = _check(args)
    # on the CPU the layers are timed as a run trains them: with freed memory kept for reuse, so a step does not map
    # its big activations afresh (a run's allocator; STEMLAB_KEEP_FREED_MEMORY=0 times them with glibc's defaults)
    allocator = keep_freed_memory(dev.type)
    args.out = Path(args.out or Path("outputs") / "shapes" / dev.type)
    args.out.mkdir(parents=True, exist_ok=True)
    command = command_of(args)
    settings = Settings.of(dev, args.threads, args.repeats, allocator)
    bf16 = bf16_support(dev)
    if "bf16" in args.precision and not bf16.startswith("native"):
        _say(f"bf16 is {bf16} on this device: its times measure an emulation")
    load_before, t0 = os.getloadavg()[0], time.perf_counter()
    layers = [spec for fam in dict.fromkeys(args.families) for spec in family_layers(fam)]
    points = plan(layers, args.batch, args.sweep, list(dict.fromkeys(args.precision)), list(dict.fromkeys(args.memory_format)))
    # both read before this run's shapes.json replaces them (with this run's settings, which any rows would match)
    earlier, done = _earlier_runs(args.out, vars(settings)), reusable(args.out, settings, _say)
    meta: dict[str, Any] = {"command": command, "batch": args.batch, "bf16": bf16, "load_before": load_before,
                            "status": "running"}
    write_meta(args.out, settings, meta)
    new_rows: list[dict] = []  # what this invocation measures, as it goes
    try:
        if args.recalibrate:
            with num_threads(args.threads):
                for p in args.precision:
                    _say(f"calibrating the peaks of {settings.device_name} in {p}")
                    peaks(dev, DTYPES[p], refresh=True)
        rows, reused = measure_all(points, dev, settings, args.budget_s, args.out, done, _say, new_rows)
    except KeyboardInterrupt:
        this = {"rows": len(new_rows), "wall_s": time.perf_counter() - t0, "load_before": load_before,
                "load_after": os.getloadavg()[0]}
        write_meta(args.out, settings, {**meta, "status": "interrupted", "measured": earlier + [this]})
        _say(f"interrupted; the layers measured so far are in {args.out / 'shapes.csv'}: re-run the same command to continue")
        return 130
    wall, load_after = time.perf_counter() - t0, os.getloadavg()[0]
    this = [{"rows": len(rows) - reused, "wall_s": wall, "load_before": load_before, "load_after": load_after}]
    meta.update(status="complete", reused=reused, load_after=load_after, wall_s=wall,
                measured=(earlier if reused else []) + (this if len(rows) > reused else []))
    figures = [p.name for p in save_figures(rows, args.batch, args.out, {**meta, "settings": vars(settings)})]
    atomic_write(args.out / "shapes.md", render(rows, {**meta, "settings": vars(settings)}, command, figures))
    write_meta(args.out, settings, meta)
    timed = int((rows["status"] == "timed").sum())
    print(f"measured {timed} of {len(rows)} layers ({reused} reused) in {meta['wall_s']:.0f} s; wrote shapes.csv, "
          f"shapes.json, shapes.md{''.join(', ' + f for f in figures)} to {args.out}")
    return 0
