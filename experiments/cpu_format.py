"""`train.precision=auto` and `train.channels_last=auto` on the CPU: the CPU's capability says which formats are worth
trying, a short probe of the run's own training step says which of them is fastest, and the result is cached per
machine (CPU model, threads, torch version) and workload, like the profiler's peaks (profiler/calibrate.py).

Why measure: bf16 autocast with channels_last trained xresnet18 at 64 px 1.6x faster than fp32 on a Xeon with AMX
and 1.9x on an AMD EPYC with AVX-512 BF16 but no AMX (benchmarks/RESULTS.md), while channels_last alone helped the
same model by 1.35x at 28 px and 1.12x at 64 px on the EPYC and slowed it on the Xeon. No rule of thumb holds on
every CPU and model, so the candidates are timed."""
from __future__ import annotations

import hashlib
import logging
import os
import statistics
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from profiler.calibrate import cache_path, cached, cpu_flags, cpu_model, damaged_fields
from profiler.runtime import AUTOCAST_DTYPES, make_input, prepare
from profiler.timing import interleaved, time_step

log = logging.getLogger("stemlab")

# oneDNN computes bf16 natively with AMX tiles (amx_bf16) or AVX-512 BF16 dot products (avx512_bf16); without either
# it converts to fp32 and back, which is never faster, so bf16 is not even probed there
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
MARGIN = 0.03  # a format replaces the baseline only when its step is this much faster: a tie stays with the baseline
PROBE_ROUNDS = 5  # interleaved rounds of the candidates (one training step each); the medians decide

Workload = Callable[[], tuple[nn.Module, tuple[int, ...]]]  # builds the run's model and its batch shape


@dataclass(frozen=True)
class Format:
    precision: str  # fp32 | bf16 | fp16
    channels_last: bool

    @property
    def label(self) -> str:
        return f"{self.precision}{', channels_last' if self.channels_last else ''}"


def capabilities(flags: set[str] | None = None) -> dict[str, Any]:
    """The CPU's model and what it computes natively, for the record and the choice."""
    flags = cpu_flags() if flags is None else flags
    return {"cpu_model": cpu_model(), "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "native_bf16": any(f in flags for f in NATIVE_BF16_FLAGS)}


def candidates(precision: str, channels_last: Any, native_bf16: bool) -> list[Format]:
    """The formats `auto` chooses from, baseline first: an explicit setting is kept, auto precision tries bf16 only
    where the CPU computes it natively, auto channels_last tries both layouts."""
    precisions = [precision] if precision != "auto" else ["fp32", "bf16"] if native_bf16 else ["fp32"]
    layouts = [False, True] if channels_last == "auto" else [bool(channels_last)]
    return [Format(p, cl) for p in precisions for cl in layouts]


def choose(step_ms: dict[Format, float]) -> Format:
    """The fastest format, if it beats the baseline (the first one) by more than MARGIN; else the baseline."""
    baseline = next(iter(step_ms))
    best = min(step_ms, key=step_ms.get)
    return best if step_ms[best] < (1 - MARGIN) * step_ms[baseline] else baseline


def probe(model: nn.Module, shape: tuple[int, ...], formats: list[Format], rounds: int = PROBE_ROUNDS) -> dict[Format, float]:
    """Median ms of one training step (forward + backward, the profiler's timer) of `model` on a `shape` batch in
    each format, timed interleaved so that load from other processes hits every format alike."""
    dev = torch.device("cpu")
    log.info("Probing which CPU format trains this model fastest (%s: %d training steps of each at batch %s; once per "
             "machine and model, then cached in %s); its estimate follows the first step.",
             " / ".join(f.label for f in formats), rounds + 1, shape[0], cache_path("cpu_formats.json"))
    steps = {}
    for f in formats:
        work, x = prepare(model, dev, f.channels_last).train(), make_input(shape, dev, f.channels_last)
        steps[f] = lambda work=work, x=x, dtype=AUTOCAST_DTYPES[f.precision]: time_step(work, x, True, dev, dtype)[1]
        first_ms = steps[f]()  # warm-up: oneDNN builds its kernels for the format on the first call
        if len(steps) == 1:
            log.info("CPU format probe: a first step took %.1f s (it builds the kernels: the slowest), so at most about "
                     "%.0f s in all.", first_ms / 1e3,
                     first_ms / 1e3 * len(formats) * (rounds + 1))
    times = interleaved(steps, min_rounds=rounds)
    return {f: statistics.median(t) for f, t in times.items()}


def _key(model: nn.Module, shape: tuple[int, ...], formats: list[Format]) -> str:
    """Machine (CPU, threads, torch) and workload (the model's structure, batch shape, candidates)."""
    workload = hashlib.sha1(f"{model!r}|{tuple(shape)}|{[f.label for f in formats]}".encode()).hexdigest()[:16]
    return f"{cpu_model()} ({torch.get_num_threads()} threads) | torch {torch.__version__} | {workload}"


def resolve_cpu_format(precision: str, channels_last: Any, workload: Workload,
                       caps: dict[str, Any] | None = None) -> tuple[Format, dict[str, Any]]:
    """The format a CPU run trains in, and how it was decided (for the record): explicit settings as given; `auto`
    from the candidates' probed step times (cached in cpu_formats.json beside the profiler's calibration)."""
    caps = capabilities() if caps is None else caps
    formats = candidates(precision, channels_last, caps["native_bf16"])
    if len(formats) == 1:
        return formats[0], {"how": "setting" if precision != "auto" else "capability", **caps}
    model, shape = workload()
    entry = cached("cpu_formats.json", _key(model, shape, formats), lambda: _probed(model, shape, formats),
                   lambda entry: damaged_fields(entry, [f.label for f in formats]))
    step_ms = {f: entry[f.label] for f in formats}
    chosen = choose(step_ms)
    return chosen, {"how": "probe", **caps, "probe_ms": {f.label: round(ms, 3) for f, ms in step_ms.items()},
                    "probe_load": entry.get("load"), "speedup": step_ms[formats[0]] / step_ms[chosen]}


def _probed(model: nn.Module, shape: tuple[int, ...], formats: list[Format]) -> dict[str, float]:
    """The cache entry: ms per format and the machine's load while they were timed (a busy machine's probe may
    pick by noise: then it says so, once)."""
    entry = {f.label: ms for f, ms in probe(model, shape, formats).items()}
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        log.warning("The CPU format probe ran on a busy machine (load %.1f on %d cores), so its choice may follow the "
                    "noise; delete %s to probe again on a quiet one.", load, os.cpu_count(), cache_path("cpu_formats.json"))
    return {**entry, "load": load}
