"""Equal-cost matching (`stem.match`): scale a stem's internal widths until its FLOPs, params (profiler.stem_cost) or measured
train-step time are within 5 % of a target. A setup step of a run, above the cost profiler whose step timer it uses.

FLOPs and params are counted on the meta device: shapes only, no arithmetic, so a search over widths is cheap.
Time is measured on the run's device, batch, threads and precision with the profiler's step timer, the candidate and
the target interleaved (each round times both; load that comes and goes hits both alike), until their ratio is known
to ±1 %: every evaluation is a timed comparison, so that search is capped, and it first checks that the machine
compares repeatably enough for 5 % to mean anything.

Why not a ratio of medians of a few steps (as before): a stem's step time on the CPU varies in jumps, not only
around one value. Its activations are fresh allocations, and glibc returns a varying part of them to the kernel
between steps (a step of resnet_7x7 at batch 64, 64 px, takes 0, 4,096 or 12,288 minor page faults, i.e. 0-48 MB
mapped anew); when a good share of the steps pay such faults, the median of 15 jumps between the modes (null
comparisons strayed 3-18 % on a quiet machine). A 20 % trimmed mean of the paired log ratios counts each mode at its
frequency, and its confidence interval (Tukey-McLaughlin, scipy) says when enough rounds were timed (what
torch.utils.benchmark's adaptive_autorange does with the IQR)."""
from __future__ import annotations

import gc
import math
import re
from contextlib import contextmanager
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
import torch
from scipy.stats import mstats, trim_mean, ttest_1samp
from torch import nn

from profiler.runtime import AUTOCAST_DTYPES, make_input
from profiler.timing import interleaved, time_step

from profiler.stem_cost import cost
from stems import StemError, available, spec  # the package: importing it registers every stem family
from stems.registry import make

from .schema import MATCH_TEXT

TOLERANCE = 0.05  # |achieved / target - 1| allowed
WIDTH_MIN = 8  # lower bound for any scaled width: narrower layers are degenerate (BN statistics over a few channels)
WIDTH_MAX = 2048  # upper bound for any scaled width
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}
_NUMBER = r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*"

REPEATS = 3  # null comparisons (a stem against a copy of itself): how far their ratios stray from 1 is the noise
REPEATABILITY = TOLERANCE / 2  # noise allowed: timing noise may use at most half of the 5 %
TIME_BUDGET = 12  # comparisons the uniform width search may spend (bracket + bisection)
NUDGE_ROUNDS = 2  # rounds of single-width nudges after it, each at most 2 comparisons per free width
NUDGE_FRACTION = 1 / 8  # a timed nudge moves a width by about this share: one channel is below the noise
WARMUP_ROUNDS = 3  # untimed steps of each stem first: its kernels chosen, its allocations and page faults settled
MIN_ROUNDS = 20  # interleaved rounds per comparison (each times both stems, in alternating order) ...
ROUND_BATCH = 10  # ... then more, this many at a time, until the ratio's 95 % CI is within ±PRECISION ...
PRECISION = 0.01
MAX_COMPARE_S = 10.0  # ... or the timed steps of both stems add up to this many seconds ...
MAX_ROUNDS = 2000  # ... or this many rounds (a stem of a few microseconds)
TRIM = 0.2  # share of the log ratios cut at each end (Wilcox's default): stalls of up to a fifth of the rounds go

Timer = Callable[[nn.Module, torch.Tensor, "torch.dtype | None"], float]  # (stem, batch, autocast dtype) -> s of one step


def train_step_time(stem: nn.Module, x: torch.Tensor, dtype: torch.dtype | None = None) -> float:
    """Seconds of one forward + backward of `stem` on `x` (the stem's share of a train step) under autocast to
    `dtype` (None: fp32): the profiler's end-to-end step timer, on the threads the run trains with."""
    return time_step(stem, x, True, x.device, dtype)[1] / 1e3


class Comparison(NamedTuple):
    """One timed comparison of stem a with stem b."""

    ratio: float  # a's step time over b's: the trimmed mean of the per-round log ratios, exponentiated
    uncertainty: float  # the relative half-width of the ratio's 95 % confidence interval
    a_s: float  # seconds of a step of a (the trimmed mean of its log times, exponentiated)
    b_s: float  # the same for b
    rounds: int


def _trimmed(logs: np.ndarray) -> tuple[float, float]:
    """exp of the trimmed mean of `logs`, and the relative half-width of its 95 % CI (Tukey-McLaughlin)."""
    if np.ptp(logs) == 0:  # identical timings (a deterministic timer): the CI's standard error would divide by zero
        return math.exp(logs[0]), 0.0
    lo, hi = mstats.trimmed_mean_ci(logs, limits=(TRIM, TRIM))
    if hi - lo <= 0:  # the middle values all alike but not the rest: no CI from them, the untrimmed t interval then
        lo, hi = ttest_1samp(logs, 0).confidence_interval()
    return math.exp(trim_mean(logs, TRIM)), math.expm1((hi - lo) / 2)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No garbage collection inside the timed steps (timeit does the same): a collection lands in one step only."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _Clock:
    """Compares stems of one match on one device, batch, precision and memory format, and counts the timed steps for
    the record."""

    def __init__(self, timer: Timer, device: str, batch_size: int, in_channels: int, image_size: int,
                 out_channels: int, precision: str = "fp32", channels_last: bool = False):
        self.timer, self.device, self.out_channels, self.count = timer, device, out_channels, 0
        self.precision, self.channels_last, self.dtype = precision, channels_last, AUTOCAST_DTYPES[precision]
        self.x = make_input((batch_size, in_channels, image_size, image_size), torch.device(device), channels_last)

    def stem(self, name: str, params: dict[str, Any]) -> nn.Module:
        stem = make(spec(name), self.x.shape[1], self.out_channels, params).to(self.device).train()
        return stem.to(memory_format=torch.channels_last) if self.channels_last else stem

    def _time(self, stem: nn.Module) -> float:
        self.count += 1
        return float(self.timer(stem, self.x, self.dtype))

    def compare(self, a: nn.Module, b: nn.Module) -> Comparison:
        """a's step time over b's, timed in interleaved rounds after warm-up, until the ratio is known to
        ±PRECISION, or is clearly more than 2 x TOLERANCE off 1 (more rounds would change no decision of the
        search), or MAX_COMPARE_S seconds of steps or MAX_ROUNDS rounds were timed."""
        times: dict[str, list[float]] = {"a": [], "b": []}
        with _gc_paused():
            for _ in range(WARMUP_ROUNDS):
                self._time(a), self._time(b)
            while True:
                batch = ROUND_BATCH if times["a"] else MIN_ROUNDS
                for k, t in interleaved({"a": lambda: self._time(a), "b": lambda: self._time(b)}, batch).items():
                    times[k] += t
                logs = {k: np.log(np.maximum(t, 1e-12)) for k, t in times.items()}
                ratio, uncertainty = _trimmed(logs["a"] - logs["b"])
                off = abs(ratio - 1)
                if (uncertainty <= PRECISION or (off > 2 * TOLERANCE and uncertainty < off / 2)
                        or sum(times["a"]) + sum(times["b"]) >= MAX_COMPARE_S or len(times["a"]) >= MAX_ROUNDS):
                    return Comparison(ratio, uncertainty, _trimmed(logs["a"])[0], _trimmed(logs["b"])[0],
                                      len(times["a"]))


def _width_divisor(params: dict[str, Any]) -> int:
    """Widths stay multiples of the bottleneck expansion (fastai's ResBlock divides them by it)."""
    return int(params.get("expansion", 1))


def _bounds(d: int) -> tuple[int, int]:
    """The smallest and largest scaled width that are multiples of `d`."""
    return -(-WIDTH_MIN // d) * d, WIDTH_MAX // d * d


def target_of(kind: str, ref: str, in_channels: int, out_channels: int, image_size: int) -> float:
    """A number (with an optional k/M/G suffix) or the cost of another stem at its defaults and the
    study's out_channels."""
    m = re.fullmatch(_NUMBER + r"([kKmMgG]?)\s*", ref)
    if m:
        return float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    return float(cost(ref, in_channels, image_size, out_channels)[kind])


def _time_target(match: str, ref: str) -> float | None:
    """Seconds of a `time:<number>ms` target; None for `time:<stem>` (that target is timed here, beside the search)."""
    m = re.fullmatch(_NUMBER + r"ms\s*", ref)
    if m:
        return float(m.group(1)) / 1e3
    if re.fullmatch(_NUMBER + r"[a-zA-Z]*\s*", ref):  # a number without its unit, or in another unit
        raise StemError(f"stem.match={match} needs its time in milliseconds; write time:<number>ms like time:2.5ms, "
                        "or time:<stem> like time:resnet_7x7.")
    spec(ref)  # an unknown stem is refused here, naming the stems there are
    return None


def _fmt(kind: str, value: float) -> str:
    if kind == "time":
        return f"{value * 1e3:.3f} ms"
    return f"{value / 1e6:.2f} MFLOPs" if kind == "flops" else f"{value / 1e3:.1f}k params"


def _base_widths(name: str, params: dict[str, Any], out_channels: int) -> tuple[list[int], int]:
    """The widths the search starts from (the output width last) and the divisor they keep."""
    s = spec(name)
    if "widths" not in s.defaults:
        matchable = ", ".join(n for n in available() if "widths" in spec(n).defaults)
        raise StemError(f"stem {name!r} has no widths to scale, so stem.match cannot apply to it; "
                        f"drop stem.match or pick a stem with widths ({matchable}).")
    base = [int(w) for w in params.get("widths", s.defaults["widths"])]
    base[-1] = out_channels  # the output width rule (stems/registry.py): the returned widths show the real output
    if len(base) < 2:
        raise StemError(f"stem {name!r} has only its output width, so stem.match has nothing to scale.")
    return base, _width_divisor({**s.defaults, **params})


def _search(value: Callable[[tuple[int, ...]], float], target: float, base: list[int], d: int,
            memo: dict[tuple[int, ...], float], budget: int | None = None, close_enough: float = TOLERANCE / 4,
            rounds: int | None = None, nudge: float = 0.0) -> tuple[int, ...]:
    """The widths (last one fixed) whose value is closest to `target`; every value read lands in `memo`.

    The free widths are scaled by one factor first: value is non-decreasing in it, so the factor is bracketed by
    doubling from the base widths (an expensive evaluation stays near the target) and bisected on its log until
    `budget` values have been read (or the widths stop changing). Then single widths are nudged by about `nudge`
    of their width (at least one divisor step) while that brings the value closer, for at most `rounds` rounds,
    until within `close_enough`."""
    free = len(base) - 1
    wmin, wmax = _bounds(d)

    def val(widths: tuple[int, ...]) -> float:
        if widths not in memo:
            memo[widths] = value(widths)
        return memo[widths]

    def scaled(log_alpha: float) -> tuple[int, ...]:
        return tuple(min(wmax, max(wmin, round(w * math.exp(log_alpha) / d) * d)) for w in base[:free]) + (base[-1],)

    def above(log_alpha: float) -> bool:
        return val(scaled(log_alpha)) >= target

    def err(widths: tuple[int, ...]) -> float:
        return abs(val(widths) / target - 1)

    # 1. one factor for all free widths: bracket [lo, hi] around the target, then bisect on log(alpha)
    lo_lim, hi_lim = math.log(wmin / max(base[:free])), math.log(wmax / min(base[:free]))
    lo = hi = min(max(0.0, lo_lim), hi_lim)
    if above(lo):
        while lo > lo_lim and above(lo):
            hi, lo = lo, max(lo - math.log(2), lo_lim)
    else:
        while hi < hi_lim and not above(hi):
            lo, hi = hi, min(hi + math.log(2), hi_lim)
    for _ in range(40):
        if budget is not None and len(memo) >= budget:
            break
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if above(mid) else (mid, hi)
    # the closest value read, not only the last bracket's ends: a noisy timing can mislead a bisection step
    best = min(memo, key=err)
    # 2. nudge single widths while that brings the value closer to the target
    done = 0
    while err(best) > close_enough and (rounds is None or done < rounds):
        done += 1
        moves = [max(d, round(w * nudge / d) * d) for w in best[:free]]
        steps = [best[:i] + (best[i] + sgn * moves[i],) + best[i + 1:] for i in range(free) for sgn in (-1, 1)
                 if wmin <= best[i] + sgn * moves[i] <= wmax]
        nxt = min(steps, key=err, default=best)
        if err(nxt) >= err(best):
            break
        best = nxt
    return best


def _unreachable(name: str, kind: str, target: float, match: str, image_size: int, d: int, achieved: float,
                 widths: tuple[int, ...]) -> StemError:
    wmin, wmax = _bounds(d)
    head = f"stem {name!r} cannot reach {_fmt(kind, target)} ({match}) at {image_size} px"
    if achieved > target and all(w == wmin for w in widths[:-1]):  # the narrowest stem is still too costly: say why
        return StemError(f"{head}: even at its narrowest, widths {list(widths)}, it {'takes' if kind == 'time' else 'has'} "
                         f"{_fmt(kind, achieved)}, because what no width search narrows (its output layer, "
                         f"{widths[-1]} wide by the stem contract, and its number of layers) already costs more; match it to a "
                         f"costlier target or use a shallower stem.")
    # a miss between the bounds means the timings did not rise steadily with the widths: noise, or kernels that favour
    # some widths (conv2_s2 at 28 px, bf16: 1.05 ms at width 16, 1.31 at 19, 1.40 at 28, 1.33 at 32); FLOPs and params
    # are exact, so their gaps are real
    ref = match.partition(":")[2]
    why = (f"; its time did not rise steadily with the widths here (noise, or kernels that favour some widths): use a "
           f"larger train.bs or a quieter machine, or stem.match=flops:"
           f"{ref if _time_target(match, ref) is None else '<stem or number>'}"
           if kind == "time" and not (all(w == wmin for w in widths[:-1]) or all(w == wmax for w in widths[:-1])) else "")
    return StemError(f"{head} within widths {wmin}..{wmax}: the closest it gets is {_fmt(kind, achieved)} with "
                     f"widths {list(widths)}{why}.")


def check_match(name: str, in_channels: int, out_channels: int, image_size: int, match: str,
                params: dict[str, Any]) -> None:
    """What match_params refuses before any search or timing (the config check calls it before a run starts): a
    spec of another form, a stem without widths, a target that is neither a registered stem nor a positive number."""
    kind, _, ref = str(match).partition(":")
    if kind not in ("flops", "params", "time") or not ref:
        raise StemError(f"stem.match must read {MATCH_TEXT}, not {match!r}.")
    _base_widths(name, params, out_channels)
    target = _time_target(match, ref) if kind == "time" else target_of(kind, ref, in_channels, out_channels, image_size)
    if target is not None and target <= 0:
        raise StemError(f"stem.match target must be positive, got {match!r}.")


def match_params(name: str, in_channels: int, out_channels: int, image_size: int, match: str,
                 params: dict[str, Any], *, device: str = "cpu", batch_size: int = 64,  # 64: train.bs default
                 precision: str = "fp32", channels_last: bool = False,
                 timer: Timer | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Scale the internal widths of stem `name` so its forward FLOPs or params at `image_size`, or its measured
    train-step time on `device` at `batch_size`, `precision` and memory format, are within 5 % of `match` (see
    MATCH_TEXT).

    Returns (params with the scaled `widths`, {target_kind, target_value, achieved_value, target_spec}; time
    matches add how they were timed). The last width is the stem's output (fixed by the contract); the others
    are scaled together by one factor, then nudged one at a time, so the search reaches targets between the
    uniform steps. `timer` times one stem on one batch (default: train_step_time; tests inject a deterministic one)."""
    params = dict(params or {})
    check_match(name, in_channels, out_channels, image_size, match, params)
    kind, _, ref = str(match).partition(":")
    base, d = _base_widths(name, params, out_channels)
    if kind == "time":
        clock = _Clock(timer or train_step_time, device, batch_size, in_channels, image_size, out_channels,
                       precision, channels_last)
        return _match_time(name, image_size, match, ref, params, base, d, clock)
    target = target_of(kind, ref, in_channels, out_channels, image_size)
    memo: dict[tuple[int, ...], float] = {}
    best = _search(lambda w: cost(name, in_channels, image_size, out_channels, {**params, "widths": list(w)})[kind],
                   target, base, d, memo)
    if abs(memo[best] / target - 1) > TOLERANCE:
        raise _unreachable(name, kind, target, match, image_size, d, memo[best], best)
    info = {"target_kind": kind, "target_value": target, "achieved_value": memo[best], "target_spec": match}
    return {**params, "widths": list(best)}, info


def _match_time(name: str, image_size: int, match: str, ref: str, params: dict[str, Any], base: list[int], d: int,
                clock: _Clock) -> tuple[dict[str, Any], dict[str, Any]]:
    """match_params for `time:<stem or number>ms`: repeatability first, a capped search, then a re-timed check.

    Every value the search reads is a time ratio: the candidate against the target stem timed beside it, or against
    the fixed milliseconds. Its target is 1."""
    fixed = _time_target(match, ref)
    # the reference: the target stem, or for a number this stem at its base widths (the search starts there)
    reference = (ref, {}) if fixed is None else (name, {**params, "widths": base})
    ref_stem = clock.stem(*reference)
    nulls = [clock.compare(ref_stem, clock.stem(*reference)) for _ in range(REPEATS)]
    spread = max(abs(c.ratio - 1) for c in nulls)
    unsure = max(c.uncertainty for c in nulls)
    fix = f"stem.match=flops:{ref}" if fixed is None else "stem.match=flops:<stem or number>"
    if spread > REPEATABILITY or unsure > REPEATABILITY:
        what = "the target" if fixed is None else f"stem {name!r}"
        raise StemError(f"stem.match={match} cannot be held to {TOLERANCE * 100:.0f} % here: {what} timed against a "
                        f"copy of itself on {clock.device} is off by up to {spread * 100:.1f} % in {REPEATS} tries, "
                        f"known to ±{unsure * 100:.1f} % after up to {max(c.rounds for c in nulls)} rounds each; use "
                        f"{fix}, or a quieter machine or a larger train.bs.")

    def ratio(widths: tuple[int, ...]) -> tuple[float, float]:
        """(candidate / target, the target's seconds) of one timed comparison."""
        cand = clock.stem(name, {**params, "widths": list(widths)})
        if fixed is not None:
            return clock.compare(cand, cand).a_s / fixed, fixed
        c = clock.compare(cand, ref_stem)
        return c.ratio, c.b_s

    memo: dict[tuple[int, ...], float] = {} if fixed is None else {tuple(base): float(np.median([c.a_s for c in nulls])) / fixed}
    best = _search(lambda w: ratio(w)[0], 1.0, base, d, memo,
                   budget=TIME_BUDGET, close_enough=REPEATABILITY, rounds=NUDGE_ROUNDS, nudge=NUDGE_FRACTION)
    target_s = fixed if fixed is not None else float(np.median([c.b_s for c in nulls]))
    if abs(memo[best] - 1) > TOLERANCE:
        raise _unreachable(name, "time", target_s, match, image_size, d, memo[best] * target_s, best)
    # one comparison is a short while and the machine's load may change from one to the next: compare the pick
    # with the target again and accept only what holds now
    off, target_s = ratio(best)
    off -= 1
    if abs(off) > TOLERANCE:
        raise StemError(f"stem.match={match} held during the search but not when timed again: widths {list(best)} "
                        f"take {_fmt('time', (1 + off) * target_s)} against {_fmt('time', target_s)} ({off * 100:+.1f} %) "
                        f"on {clock.device}; use {fix}, or a quieter machine or a larger train.bs.")
    info = {"target_kind": "time", "target_value": target_s, "achieved_value": (1 + off) * target_s,
            "target_spec": match, "unit": "s", "repeatability": spread, "uncertainty": unsure, "device": str(clock.device),
            "batch_size": clock.x.shape[0], "threads": torch.get_num_threads(), "precision": clock.precision,
            "channels_last": clock.channels_last, "timings": clock.count}
    return {**params, "widths": list(best)}, info
