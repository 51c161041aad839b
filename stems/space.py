"""The stem design space: one parametrised stem (`space`) spanning the zoo's design choices, the points of it that
registered stems are, and a seeded sampler (RegNet's method applied to stems: Radosavovic et al. 2020, Designing
Network Design Spaces, §3: sample models from a space, train each briefly, compare design choices by the error
distributions of the samples). The sampler is the space sweeper's (hydra_plugins/stemlab_space_sweeper/_sampling.py),
the labels a point is analysed by are in stems/space_labels.py, named points in stems/space_points.py.

A point: an optional space-to-depth at the input (`s2d` 1, 2 or 4), then 1-4 conv + norm + act layers (`widths`,
`kernels`, `strides`: one entry per layer), with an optional 3x3 stride-2 max-pool after `pool_at` of them (None:
after the last). The two x2 downsamplings of the stem contract are therefore each a conv stride, the max-pool or a
space-to-depth: s2d x prod(strides) x (2 with the pool) must be 4. Odd kernels pad 'same'; an even kernel is a
patch embedding (kernel = stride, no padding, as ConvNeXt's). `norm` and `act` apply to every layer."""
from __future__ import annotations

import math
from typing import Any, Optional

from torch import nn

from .layers import ACTS, CONVNEXT_LN_EPS, LN_EPS, NORMS, conv_norm_act, output_widths, positive_ints
from .registry import CONTRACT_STRIDE, StemError, register, spec

MAX_LAYERS = 4
MECHANISMS = ("conv", "max", "s2d")  # how one x2 downsampling is done


@register("space", family="space",
          source="stemlab's stem design space, sampled as RegNet samples networks (Radosavovic et al. 2020, "
                 "Designing Network Design Spaces); the default point is xresnet_3conv")
def space(in_channels: int, out_channels: int, widths: tuple[int, ...] = (32, 32, 64),
          kernels: tuple[int, ...] = (3, 3, 3), strides: tuple[int, ...] = (2, 1, 1), pool: str = "max",
          pool_at: Optional[int] = None, s2d: int = 1, norm: str = "bn", act: str = "relu", bias: bool = False,
          ln_eps: float = LN_EPS) -> nn.Module:
    """[PixelUnshuffle(s2d)] -> conv + norm + act per entry of widths / kernels / strides, with a 3x3 stride-2
    max-pool after `pool_at` layers when pool='max'. `bias` puts a bias in every conv (ConvNeXt's patchify has one
    before its LayerNorm); `ln_eps` is the LayerNorm's eps (a source's detail, not a design choice)."""
    w = output_widths(widths, out_channels)
    check_point(w, kernels, strides, pool, pool_at, s2d, norm, act)
    layers: list[nn.Module] = [nn.PixelUnshuffle(s2d)] if s2d > 1 else []
    chans = [in_channels * s2d * s2d, *w]
    for i, (k, s) in enumerate(zip(kernels, strides)):
        if pool == "max" and pool_at == i:
            layers.append(nn.MaxPool2d(3, 2, 1))
        layers.append(conv_norm_act(chans[i], chans[i + 1], k, s, norm, act, padding=k // 2 if k % 2 else 0,
                                    ln_eps=ln_eps, bias=bias))
    if pool == "max" and pool_at in (None, len(w)):
        layers.append(nn.MaxPool2d(3, 2, 1))
    return nn.Sequential(*layers)


def check_point(widths: list[int], kernels, strides, pool: str, pool_at: int | None, s2d: int, norm: str,
                act: str) -> None:
    """A point of the space honours the stem contract and its own rules; ValueError says which rule it breaks."""
    n = len(widths)
    kernels, strides = positive_ints("kernels", kernels, n), positive_ints("strides", strides, n)
    if n > MAX_LAYERS:
        raise ValueError(f"the space has 1 to {MAX_LAYERS} conv layers, not {n}")
    if s2d not in (1, 2, 4) or any(s not in (1, 2, 4) for s in strides):
        raise ValueError(f"s2d and strides must be 1, 2 or 4, got s2d={s2d}, strides={strides}")
    for k, s in zip(kernels, strides):
        if k % 2 == 0 and k != s:
            raise ValueError(f"an even kernel is a patch embedding and needs kernel = stride, got kernel {k} at stride {s}")
        if k < s:
            raise ValueError(f"a kernel {k} at stride {s} skips input pixels; use a kernel of at least {s}")
    if pool not in ("max", "none"):
        raise ValueError(f"pool must be max or none, not {pool!r}")
    if pool_at is not None and (pool == "none" or not 0 <= pool_at <= n):
        raise ValueError(f"pool_at={pool_at} needs pool=max and a position from 0 to {n} (layers before the pool)")
    total = s2d * math.prod(strides) * (2 if pool == "max" else 1)
    if total != CONTRACT_STRIDE:
        raise ValueError(f"s2d x strides x pool downsample by {total}, but the stem contract needs {CONTRACT_STRIDE}")
    if norm not in NORMS or act not in ACTS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)} and act one of {', '.join(ACTS)}")


# --- registered stems as points ---------------------------------------------------------------------------------

def _deep(p: dict[str, Any], pool: str = "max", pool_at: int | None = None) -> dict[str, Any]:
    n = len(p["widths"])
    strides = [2] + [1] * (n - 1) if pool == "max" else [2] + [1] * (n - 2) + [2]
    return dict(widths=p["widths"], kernels=[3] * n, strides=strides, pool=pool, pool_at=pool_at, norm=p["norm"],
                act=p["act"])


def _patch(k: int, s: int, p: dict[str, Any], pool: str = "none", ln_eps: float = CONVNEXT_LN_EPS) -> dict[str, Any]:
    return dict(widths=[64], kernels=[k], strides=[s], pool=pool, norm=p["norm"], act=p["act"], bias=True, ln_eps=ln_eps)


# stem -> its point, as a function of the stem's own parameters (so a stem with changed parameters maps too)
POINTS = {
    "resnet_7x7": lambda p: dict(widths=[64], kernels=[p["kernel_size"]], strides=[2], norm=p["norm"], act=p["act"]),
    "resnet_7x7_nopool": lambda p: dict(widths=p["widths"], kernels=[p["kernel_size"], 3], strides=[2, 2],
                                        pool="none", norm=p["norm"], act=p["act"]),
    "xresnet_3conv": _deep,
    "deep_tiered": _deep,
    "deep_convpool": lambda p: _deep(p, pool="none"),
    "deep_wide": lambda p: {**_deep({**p, "widths": p["widths"][:-1]}), "widths": p["widths"],
                            "kernels": [3, 3, 3, 1], "strides": [2, 1, 1, 1], "pool_at": 3},
    "conv_stack": lambda p: dict(widths=p["widths"], kernels=p["kernel_sizes"], strides=p["strides"], pool="none",
                                 norm=p["norm"], act=p["act"]),
    "patchify_4x4": lambda p: _patch(4, 4, p),
    "patchify_2x2_s2": lambda p: _patch(2, 2, p, pool="max") if p["pool"] == "max" else None,
    "patchify_overlap": lambda p: _patch(p["kernel_size"], 4, p, ln_eps=LN_EPS),
    "space_to_depth": lambda p: dict(widths=[64], kernels=[p["kernel_size"]], strides=[1], pool="none",
                                     s2d=p["block_size"], norm=p["norm"], act=p["act"]) if p["block_size"] == 4 else None,
}
# registered stems the space cannot express, and why (a stem registered later must be added to one of the two)
OUTSIDE = {
    "conv2_s2": "its norm follows only the last conv and its activation sits between convs without a norm",
    "dw_separable": "depthwise convolutions (groups) are outside the space",
    "resblock": "residual blocks are outside the space",
    "resblock_bottleneck": "residual blocks are outside the space",
}


def point_of(name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `space` parameters that build the same network as stem `name` with `params` (its defaults otherwise)."""
    s = spec(name)
    p = {**s.defaults, **(params or {})}
    point = p if s.family == "space" else POINTS[s.name](p) if s.name in POINTS else None
    if point is None:
        why = OUTSIDE.get(s.name, "these parameters are outside the space")
        raise StemError(f"stem {s.name!r} is not a point of the stem space: {why}.")
    return {**spec("space").defaults, **point}
