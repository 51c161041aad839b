"""The stem design space: one parametrised stem (`space`) spanning the zoo's design choices, the point of a
registered stem (declared on its registration: `register(..., point=...)` or `outside=...`), and a seeded sampler
(RegNet's method applied to stems: Radosavovic et al. 2020, Designing Network Design Spaces, §3: sample models from a
space, train each briefly, compare design choices by the error distributions of the samples). The sampler is the
space sweeper's (hydra_plugins/stemlab_space_sweeper/_sampling.py), the labels a point is analysed by are in
stems/space_labels.py, named points in stems/space_points.py.

A point: an optional space-to-depth at the input (`s2d` 1, 2 or 4), then 1-4 conv + norm + act layers (`widths`,
`kernels`, `strides`: one entry per layer), with an optional 3x3 stride-2 max-pool after `pool_at` of them (None:
after the last). The two x2 downsamplings of the stem contract are therefore each a conv stride, the max-pool or a
space-to-depth: s2d x prod(strides) x (2 with the pool) must be 4. Odd kernels pad 'same'; an even kernel is a
patch embedding (kernel = stride, no padding, as ConvNeXt's). `norm` and `act` apply to every layer."""
from __future__ import annotations

import math
from typing import Any, Optional

from torch import nn

from .layers import ACTS, LN_EPS, NORMS, conv_norm_act, output_widths, positive_ints
from .registry import CONTRACT_STRIDE, StemError, register, spec

MAX_LAYERS = 4
MECHANISMS = ("conv", "max", "s2d")  # how one x2 downsampling is done


def itself(params: dict[str, Any]) -> dict[str, Any]:
    """The point of a stem of the `space` family: its own parameters."""
    return params


@register("space", family="space",
          source="stemlab's stem design space, sampled as RegNet samples networks (Radosavovic et al. 2020, "
                 "Designing Network Design Spaces); the default point is xresnet_3conv", point=itself)
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


def point_of(name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `space` parameters that build the same network as stem `name` with `params` (its defaults otherwise)."""
    s = spec(name)
    point = s.point({**s.defaults, **(params or {})}) if s.point else None
    if point is None:
        raise StemError(f"stem {s.name!r} is not a point of the stem space: {s.outside or 'these parameters are outside the space'}.")
    return {**spec("space").defaults, **point}

