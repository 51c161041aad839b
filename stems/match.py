"""Cost of a stem (forward FLOPs by torch's FlopCounterMode, parameter count) and equal-cost matching:
scale a stem's internal widths until its FLOPs or params are within 5 % of a target.

Costs are counted on the meta device: shapes only, no arithmetic, so a search over widths is cheap."""
from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .registry import StemError, available, make, spec

TOLERANCE = 0.05  # |achieved / target - 1| allowed
WIDTH_MIN = 8  # lower bound for any scaled width: narrower layers are degenerate (BN statistics over a few channels)
WIDTH_MAX = 2048  # upper bound for any scaled width
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


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


def _width_divisor(params: dict[str, Any]) -> int:
    """Widths stay multiples of the bottleneck expansion (fastai's ResBlock divides them by it)."""
    return int(params.get("expansion", 1))


def _target(kind: str, ref: str, in_channels: int, out_channels: int, image_size: int) -> float:
    """A number (with an optional k/M/G suffix) or the cost of another stem at its defaults and the
    study's out_channels."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kKmMgG]?)\s*", ref)
    if m:
        return float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    return float(cost(ref, in_channels, image_size, out_channels)[kind])


def _fmt(kind: str, value: float) -> str:
    return f"{value / 1e6:.2f} MFLOPs" if kind == "flops" else f"{value / 1e3:.1f}k params"


def match_params(name: str, in_channels: int, out_channels: int, image_size: int, match: str,
                 params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Scale the internal widths of stem `name` so its forward FLOPs or params at `image_size` are within
    5 % of `match` ('flops:<stem or number>' or 'params:<stem or number>').

    Returns (params with the scaled `widths`, {target_kind, target_value, achieved_value, target_spec}).
    The last width is the stem's output (fixed by the contract); the others are scaled together by one
    factor, then nudged one at a time, so the search reaches targets between the uniform steps."""
    s = spec(name)
    params = dict(params or {})
    kind, _, ref = str(match).partition(":")
    if kind not in ("flops", "params") or not ref:
        raise StemError(f"stem.match must read flops:<stem or number> or params:<stem or number>, not {match!r}.")
    if "widths" not in s.defaults:
        matchable = ", ".join(n for n in available() if "widths" in spec(n).defaults)
        raise StemError(f"stem {name!r} has no widths to scale, so stem.match cannot apply to it; "
                        f"drop stem.match or pick a stem with widths ({matchable}).")
    target = _target(kind, ref, in_channels, out_channels, image_size)
    if target <= 0:
        raise StemError(f"stem.match target must be positive, got {match!r}.")
    base = [int(w) for w in params.get("widths", s.defaults["widths"])]
    base[-1] = out_channels  # the output width rule (stems/registry.py): the returned widths show the real output
    d = _width_divisor({**s.defaults, **params})
    free = len(base) - 1  # the last width is the output width
    if free < 1:
        raise StemError(f"stem {name!r} has only its output width, so stem.match has nothing to scale.")

    memo: dict[tuple[int, ...], float] = {}

    def value(widths: tuple[int, ...]) -> float:
        if widths not in memo:
            memo[widths] = cost(name, in_channels, image_size, out_channels, {**params, "widths": list(widths)})[kind]
        return memo[widths]

    wmin, wmax = -(-WIDTH_MIN // d) * d, WIDTH_MAX // d * d

    def scaled(alpha: float) -> tuple[int, ...]:
        return tuple(min(wmax, max(wmin, round(w * alpha / d) * d)) for w in base[:free]) + (base[-1],)

    def err(widths):
        return abs(value(widths) / target - 1)

    # 1. one factor for all free widths: cost is non-decreasing in alpha, so bisect on log(alpha)
    lo, hi = math.log(wmin / max(base[:free])), math.log(wmax / min(base[:free]))
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if value(scaled(math.exp(mid))) < target else (lo, mid)
    best = min((scaled(math.exp(lo)), scaled(math.exp(hi))), key=err)
    # 2. nudge single widths by one divisor step while that brings the cost closer to the target
    while err(best) > TOLERANCE / 4:
        steps = [best[:i] + (best[i] + sgn * d,) + best[i + 1:] for i in range(free) for sgn in (-1, 1)
                 if wmin <= best[i] + sgn * d <= wmax]
        nxt = min(steps, key=err, default=best)
        if err(nxt) >= err(best):
            break
        best = nxt
    achieved = value(best)
    if err(best) > TOLERANCE:
        raise StemError(
            f"stem {name!r} cannot reach {_fmt(kind, target)} ({match}) at {image_size} px within widths "
            f"{wmin}..{wmax}: the closest it gets is {_fmt(kind, achieved)} with widths {list(best)}.")
    info = {"target_kind": kind, "target_value": target, "achieved_value": achieved, "target_spec": match}
    return {**params, "widths": list(best)}, info

