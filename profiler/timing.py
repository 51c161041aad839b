"""Timing: per-leaf forward and backward time under ``torch.profiler``, and end-to-end step times.

How time is attributed to layers is described in the package docstring (``profiler``).
"""

from __future__ import annotations

import bisect
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from .runtime import autocast, grad_outputs, grad_targets, leaf_modules, sync

# kineto (torch.profiler's backend) prints start/stop lines to stderr at its default level; read at first use
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

__all__ = ["measure", "time_step", "interleaved"]


_LEAF_TAG = "stemlab.leaf."
_STEP_TAG = "stemlab.step"
_FWD_RANGE = "stemlab.forward"
_BWD_RANGE = "stemlab.backward"
_BWD_TAG = "autograd::engine::evaluate_function: "


def _step(model: nn.Module, x: torch.Tensor, backward: bool, dev: torch.device,
          dtype: torch.dtype | None, annotate: bool = False) -> None:
    """One forward (+ backward into the weights' gradients, as a training step computes them)."""
    mark = (lambda name: record_function(name)) if annotate else (lambda name: nullcontext())
    with torch.set_grad_enabled(backward), autocast(dev, dtype), mark(_FWD_RANGE):
        out = model(x)
    if backward:
        outs, gouts = grad_outputs(out)
        if outs:
            with mark(_BWD_RANGE):
                torch.autograd.grad(outs, grad_targets(model), gouts, allow_unused=True)


def time_step(model: nn.Module, x: torch.Tensor, backward: bool, dev: torch.device,
              dtype: torch.dtype | None) -> tuple[float, float]:
    """Wall ms of one step's forward and of the whole step, no hooks or profiler attached (the timer the
    profiler's end-to-end figures, the CPU format probe and stem.match=time: share)."""
    sync(dev)
    t0 = time.perf_counter()
    with torch.set_grad_enabled(backward), autocast(dev, dtype):
        out = model(x)
    sync(dev)
    t1 = time.perf_counter()
    if backward:
        outs, gouts = grad_outputs(out)
        if outs:
            torch.autograd.grad(outs, grad_targets(model), gouts, allow_unused=True)
        sync(dev)
    return (t1 - t0) * 1e3, (time.perf_counter() - t0) * 1e3


def interleaved(steps: Mapping[str, Callable[[], float]], min_rounds: int, min_s: float = 0.0,
                max_rounds: int | None = None) -> dict[str, list[float]]:
    """Times of each of `steps` (each call returns one timing), taken in rounds that call every step once, in an
    order rotated from round to round, so load that comes and goes hits all of them alike and a ratio of their
    medians keeps only what differs between them. At least `min_rounds` rounds, more until the timings of every
    step add up to `min_s` (in the steps' unit, seconds or ms alike), at most `max_rounds`."""
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    rounds = 0
    while rounds < min_rounds or (min(sum(t) for t in times.values()) < min_s
                                  and (max_rounds is None or rounds < max_rounds)):
        k = rounds % len(names)
        for n in names[k:] + names[:k]:
            times[n].append(float(steps[n]()))
        rounds += 1
    return times


class _Switch:
    on = True


@contextmanager
def _annotated(leaves: list[tuple[str, nn.Module]]) -> Iterator[_Switch]:
    """Wrap every leaf's forward in a profiler range named after its index (while switched on)."""
    switch = _Switch()
    open_ranges: dict[int, list[Any]] = {}

    def pre(i: int) -> Callable:
        def hook(mod: nn.Module, args: tuple) -> None:
            if switch.on:
                rf = record_function(f"{_LEAF_TAG}{i}")
                rf.__enter__()
                open_ranges.setdefault(i, []).append(rf)

        return hook

    def post(i: int) -> Callable:
        def hook(mod: nn.Module, args: tuple, out: Any) -> None:
            if switch.on and open_ranges.get(i):
                open_ranges[i].pop().__exit__(None, None, None)

        return hook

    handles = []
    for i, (_, mod) in enumerate(leaves):
        handles += [mod.register_forward_pre_hook(pre(i)), mod.register_forward_hook(post(i))]
    try:
        yield switch
    finally:
        for h in handles:
            h.remove()


def _enclosing_leaf(ev: Any) -> int | None:
    while ev is not None:
        if ev.name.startswith(_LEAF_TAG):
            return int(ev.name[len(_LEAF_TAG):])
        ev = ev.cpu_parent
    return None


def _attribute(events: Any, n_leaves: int, cuda: bool) -> tuple[list[float], list[float], float]:
    """Per-leaf forward and backward µs of one profiled step, and the µs no leaf could claim.

    CUDA: a leaf's forward is the device time of the kernels launched inside its range; ops run
    between leaves (a residual add) go to the next leaf.  CPU: a leaf's forward is the wall time
    from the end of the previous leaf to the end of its own range, so the glue between leaves
    (container code, residual adds) is charged to the next leaf like the ops there, and the leaves
    cover the whole forward.  Backward: each autograd node's time (device time; on CPU, wall time
    since the previous node ended) goes to the leaf whose forward op created it (same thread and
    sequence number); nodes without a forward op (AccumulateGrad) are left unattributed.
    """
    fwd, bwd = [0.0] * n_leaves, [0.0] * n_leaves
    spent = (lambda e: e.device_time_total) if cuda else (lambda e: e.cpu_time_total)
    events = sorted(events, key=lambda e: e.time_range.start)
    fwd_range = next(e for e in events if e.name == _FWD_RANGE)
    bwd_range = next((e for e in events if e.name == _BWD_RANGE), None)
    seq_owner: dict[tuple[int, int], int] = {}
    between: list[Any] = []  # top-level forward ops waiting for the next leaf
    lost = 0.0
    last_leaf: int | None = None
    prev_end = fwd_range.time_range.start
    for ev in events:
        if ev.name.startswith("stemlab.") and not ev.name.startswith(_LEAF_TAG):
            continue
        if ev.time_range.start > fwd_range.time_range.end or ev.name.startswith(_BWD_TAG) or _in_backward(ev):
            continue
        leaf = _enclosing_leaf(ev)
        if ev.name.startswith(_LEAF_TAG):
            if ev.cpu_parent is None or _enclosing_leaf(ev.cpu_parent) is None:
                own = spent(ev) + sum(spent(b) for b in between) if cuda else ev.time_range.end - prev_end
                fwd[leaf] += own
                for b in between:
                    _own_seqs(b, leaf, seq_owner)
                between, last_leaf, prev_end = [], leaf, ev.time_range.end
            continue
        if leaf is not None:
            if ev.sequence_nr >= 0:
                seq_owner[(ev.thread, ev.sequence_nr)] = leaf
        elif ev.cpu_parent is None or ev.cpu_parent.name.startswith("stemlab."):
            between.append(ev)
    tail = sum(spent(b) for b in between) if cuda else fwd_range.time_range.end - prev_end
    if last_leaf is None:
        lost += tail
    else:  # after the last leaf (e.g. a functional flatten): the last leaf's
        fwd[last_leaf] += tail
        for b in between:
            _own_seqs(b, last_leaf, seq_owner)
    nodes = [e for e in events if e.name.startswith(_BWD_TAG) and not _in_backward(e.cpu_parent)]
    prev = bwd_range.time_range.start if bwd_range is not None else None
    for ev in nodes:
        if cuda or prev is None or ev.thread != bwd_range.thread:
            t = spent(ev)
        else:
            t, prev = ev.time_range.end - prev, ev.time_range.end
        owner = seq_owner.get((ev.fwd_thread, ev.sequence_nr))
        if owner is None:
            lost += t
        else:
            bwd[owner] += t
    if not cuda and bwd_range is not None and prev is not None:
        lost += max(bwd_range.time_range.end - prev, 0.0)
    return fwd, bwd, lost


def _split_steps(events: Any) -> list[list[Any]]:
    """Events grouped by the step range they start in (backward may run on another thread)."""
    steps = sorted((e for e in events if e.name.startswith(_STEP_TAG + ".")),
                   key=lambda e: e.time_range.start)
    groups: list[list[Any]] = [[] for _ in steps]
    starts = [s.time_range.start for s in steps]
    for ev in events:
        if ev.name.startswith(_STEP_TAG + ".") or ev.device_type != torch.autograd.DeviceType.CPU:
            continue
        k = bisect.bisect_right(starts, ev.time_range.start) - 1
        if k >= 0 and ev.time_range.start <= steps[k].time_range.end:
            groups[k].append(ev)
    return groups


def _in_backward(ev: Any) -> bool:
    while ev is not None:
        if ev.name.startswith(_BWD_TAG):
            return True
        ev = ev.cpu_parent
    return False


def _own_seqs(ev: Any, leaf: int, seq_owner: dict[tuple[int, int], int]) -> None:
    stack = [ev]
    while stack:
        e = stack.pop()
        if e.sequence_nr >= 0:
            seq_owner[(e.thread, e.sequence_nr)] = leaf
        stack.extend(e.cpu_children)


ESTIMATE = "timing estimate"  # the line a run's log shows at INFO (the other progress lines are DEBUG)


def _plain(k: int) -> bool:
    """Steps alternate plain, profiled, profiled, plain, ...: no order bias between the two kinds."""
    return k % 4 in (0, 3)


def estimate(plain_s: float, profiled_s: float, spent_s: float, budget_s: float | None, steps: int) -> str:
    """What the timing will cost, said after its first plain and first profiled step (a profiled step costs more,
    often several times more): the steps `measure` will still take by its own rule (at least 4 whatever the budget,
    at most `steps`; past the budget it stops before the next plain/profiled pair), each at its kind's cost."""
    total, more = spent_s, 0
    for k in range(2, steps):
        if budget_s is not None and total > budget_s and k >= 4 and k % 2 == 0:
            break
        total += plain_s if _plain(k) else profiled_s
        more += 1
    return (f"{ESTIMATE}: a plain step takes {plain_s:.2f} s, a profiled one {profiled_s:.2f} s; {more} more step(s): "
            f"the timing takes about {total:.0f} s in all" + (f" (budget {budget_s:g} s)" if budget_s is not None else ""))


def measure(model: nn.Module, x: torch.Tensor, backward: bool, dev: torch.device, dtype: torch.dtype | None,
            warmup: int, repeats: int, budget_s: float | None, progress: Callable[[str], None]
            ) -> tuple[list[list[float]], list[list[float]], dict[str, float]]:
    """Per-leaf ms (one entry per profiled step) and the end-to-end figures.

    Profiled and plain steps alternate (plain, profiled, profiled, plain, ...: no order bias), so
    both see the same load on a shared machine; each profiled step is its own profiler session
    (cheap once the profiler is initialised).  At most `repeats` of each; once `budget_s` seconds
    are spent, it stops as soon as it has 2 of each (medians need more than one).
    """
    leaves = leaf_modules(model)
    cuda = dev.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    started = time.perf_counter()
    progress(f"timing: {max(warmup, 1)} warm-up step(s), the first under the profiler's start-up")
    with profile(activities=activities):  # the first session pays the profiler's start-up
        _step(model, x, backward, dev, dtype)
    for _ in range(max(warmup, 1) - 1):
        _step(model, x, backward, dev, dtype)
    fwd_ms: list[list[float]] = [[] for _ in leaves]
    bwd_ms: list[list[float]] = [[] for _ in leaves]
    e2e_fwd: list[float] = []
    e2e_train: list[float] = []
    lost: list[float] = []
    steps = 2 * max(repeats, 2)
    done = 0
    with _annotated(leaves) as annotate:
        for k in range(steps):
            over_budget = budget_s is not None and time.perf_counter() - started > budget_s
            if over_budget and k >= 4 and k % 2 == 0:
                break
            progress(f"timing: step {k + 1}/{steps}")
            done = k + 1
            if _plain(k):
                annotate.on = False
                f, t = time_step(model, x, backward, dev, dtype)
                e2e_fwd.append(f)
                e2e_train.append(t)
                continue
            annotate.on = True
            step_started = time.perf_counter()
            with profile(activities=activities) as prof:
                with record_function(f"{_STEP_TAG}.{k}"):
                    _step(model, x, backward, dev, dtype, annotate=True)
                    sync(dev)
            if k == 1:
                progress(estimate(e2e_train[0] / 1e3, time.perf_counter() - step_started, time.perf_counter() - started,
                                  budget_s, steps))
            f, b, lo = _attribute(_split_steps(prof.events())[0], len(leaves), cuda)
            for i in range(len(leaves)):
                fwd_ms[i].append(f[i] / 1e3)
                bwd_ms[i].append(b[i] / 1e3)
            lost.append(lo / 1e3)
    progress(f"timing: done, {done} of up to {steps} steps in {time.perf_counter() - started:.1f} s"
             + (f" (the budget of {budget_s:g} s was spent)" if done < steps else ""))
    if not backward:
        bwd_ms = [[] for _ in leaves]
    totals = {"ms_fwd_e2e": statistics.median(e2e_fwd), "ms_unattributed": statistics.median(lost),
              "timed_steps": float(len(lost))}
    if backward:
        totals["ms_train_step_e2e"] = statistics.median(e2e_train)
    return fwd_ms, bwd_ms, totals
