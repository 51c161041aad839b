"""Cost of a stem (forward FLOPs by torch's FlopCounterMode, parameter count, measured train-step time) and
equal-cost matching: scale a stem's internal widths until its FLOPs, params or time are within 5 % of a target.

FLOPs and params are counted on the meta device: shapes only, no arithmetic, so a search over widths is cheap.
Time is measured (torch.utils.benchmark) on the run's device: every evaluation is a timing, so that search is
capped, and it first checks that the machine times repeatably enough for 5 % to mean anything."""
from __future__ import annotations

import logging
import math
import re
import statistics
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .registry import StemError, available, make, spec

TOLERANCE = 0.05  # |achieved / target - 1| allowed
WIDTH_MIN = 8  # lower bound for any scaled width: narrower layers are degenerate (BN statistics over a few channels)
WIDTH_MAX = 2048  # upper bound for any scaled width
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}
_NUMBER = r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*"
# what stem.match accepts (experiments.schema checks config values with these two)
MATCH_TEXT = "flops:<stem or number>, params:<stem or number> or time:<stem or milliseconds like 2.5ms>"
MATCH_SPEC = re.compile(r"(flops|params):\S+|time:(?:[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?ms|[A-Za-z][\w-]*)")

REPEATS = 3  # independent timings of the reference; their spread is the machine's repeatability
REPEATABILITY = TOLERANCE / 2  # spread allowed: timing noise may use at most half of the 5 %
TIME_BUDGET = 12  # timings the uniform width search may spend (bracket + bisection)
NUDGE_ROUNDS = 2  # rounds of single-width nudges after it, each at most 2 timings per free width
NUDGE_FRACTION = 1 / 8  # a timed nudge moves a width by about this share: one channel is below the noise
MIN_RUN_TIME = 0.2  # seconds of blocked_autorange per timing

Timer = Callable[[nn.Module, torch.Tensor], float]  # (stem, input batch) -> median seconds of one train step


def cost(name: str, in_channels: int, image_size: int, out_channels: int | None = None,
         params: dict[str, Any] | None = None) -> dict[str, int]:
    """{'flops': forward FLOPs on a (1, C, S, S) input (FlopCounterMode: 2 x MACs of convs and matmuls),
    'params': parameter count} of stem `name` with `params` overriding its defaults."""
    s = spec(name)
    with torch.device("meta"):
        stem = make(s, in_channels, s.out_channels if out_channels is None else out_channels, dict(params or {}))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        stem(torch.empty(1, in_channels, image_size, image_size, device="meta"))
    return {"flops": int(counter.get_total_flops()), "params": sum(p.numel() for p in stem.parameters())}


def train_step_time(stem: nn.Module, x: torch.Tensor, min_run_time: float = MIN_RUN_TIME) -> float:
    """Median seconds of one forward + backward of `stem` on `x` (the stem's share of a train step).

    torch.utils.benchmark warms up, synchronises CUDA and picks the block size; it runs with the threads the
    run trains with (its own default is one thread)."""
    # torch.utils.benchmark imports torch's C++-extension tooling, which logs a warning on every machine without a
    # CUDA toolkit: noise before a one-sentence answer, and nothing the timing needs
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import benchmark

    def step():
        stem(x).sum().backward()

    timer = benchmark.Timer("step()", globals={"step": step}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


class _Clock:
    """Times stems of one match on one device and batch, and counts the timings for the record."""

    def __init__(self, timer: Timer, device: str, batch_size: int, in_channels: int, image_size: int,
                 out_channels: int):
        self.timer, self.device, self.out_channels, self.count = timer, device, out_channels, 0
        self.x = torch.randn(batch_size, in_channels, image_size, image_size, device=device)

    def __call__(self, name: str, params: dict[str, Any]) -> float:
        stem = make(spec(name), self.x.shape[1], self.out_channels, params).to(self.device).train()
        self.count += 1
        return float(self.timer(stem, self.x))


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
    return StemError(f"stem {name!r} cannot reach {_fmt(kind, target)} ({match}) at {image_size} px within widths "
                     f"{wmin}..{wmax}: the closest it gets is {_fmt(kind, achieved)} with widths {list(widths)}.")


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
                 timer: Timer | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Scale the internal widths of stem `name` so its forward FLOPs or params at `image_size`, or its measured
    train-step time on `device` at `batch_size`, are within 5 % of `match` (see MATCH_TEXT).

    Returns (params with the scaled `widths`, {target_kind, target_value, achieved_value, target_spec}; time
    matches add how they were timed). The last width is the stem's output (fixed by the contract); the others
    are scaled together by one factor, then nudged one at a time, so the search reaches targets between the
    uniform steps. `timer` times one stem on one batch (default: train_step_time; tests inject a deterministic one)."""
    params = dict(params or {})
    check_match(name, in_channels, out_channels, image_size, match, params)
    kind, _, ref = str(match).partition(":")
    base, d = _base_widths(name, params, out_channels)
    if kind == "time":
        clock = _Clock(timer or train_step_time, device, batch_size, in_channels, image_size, out_channels)
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
    """match_params for `time:<stem or number>ms`: repeatability first, a capped search, then a re-timed check."""
    fixed = _time_target(match, ref)
    # the reference: the target stem, or for a number this stem at its base widths (the search starts there)
    reference = (ref, {}) if fixed is None else (name, {**params, "widths": base})
    times = [clock(*reference) for _ in range(REPEATS)]
    typical = statistics.median(times)
    spread = (max(times) - min(times)) / typical
    fix = f"stem.match=flops:{ref}" if fixed is None else "stem.match=flops:<stem or number>"
    if spread > REPEATABILITY:
        what = "the target" if fixed is None else f"stem {name!r}"
        raise StemError(f"stem.match={match} cannot be held to {TOLERANCE * 100:.0f} % here: {REPEATS} timings of "
                        f"{what} on {clock.device} differ by {spread * 100:.1f} %; use {fix}, or a quieter machine "
                        "or a larger train.bs.")
    target = typical if fixed is None else fixed
    memo: dict[tuple[int, ...], float] = {} if fixed is None else {tuple(base): typical}
    best = _search(lambda w: clock(name, {**params, "widths": list(w)}), target, base, d, memo,
                   budget=TIME_BUDGET, close_enough=REPEATABILITY, rounds=NUDGE_ROUNDS, nudge=NUDGE_FRACTION)
    if abs(memo[best] / target - 1) > TOLERANCE:
        raise _unreachable(name, "time", target, match, image_size, d, memo[best], best)
    # the search's timings are spread over a while and the machine's speed may drift: time the pick again, and a
    # target stem beside it, and accept only what holds now
    achieved = clock(name, {**params, "widths": list(best)})
    if fixed is None:
        target = clock(*reference)
    off = achieved / target - 1
    if abs(off) > TOLERANCE:
        raise StemError(f"stem.match={match} held during the search but not when timed again: widths {list(best)} "
                        f"take {_fmt('time', achieved)} against {_fmt('time', target)} ({off * 100:+.1f} %) "
                        f"on {clock.device}; use {fix}, or a quieter machine or a larger train.bs.")
    info = {"target_kind": "time", "target_value": target, "achieved_value": achieved, "target_spec": match,
            "unit": "s", "repeatability": spread, "device": str(clock.device), "batch_size": clock.x.shape[0],
            "threads": torch.get_num_threads(), "precision": "fp32", "timings": clock.count}
    return {**params, "widths": list(best)}, info
