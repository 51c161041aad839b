"""The stem design space: one parametrised stem (`space`) spanning the zoo's design choices, the points of it that
registered stems are, and a seeded sampler (RegNet's method applied to stems: Radosavovic et al. 2020, Designing
Network Design Spaces, §3: sample models from a space, train each briefly, compare design choices by the error
distributions of the samples).

A point: an optional space-to-depth at the input (`s2d` 1, 2 or 4), then 1-4 conv + norm + act layers (`widths`,
`kernels`, `strides`: one entry per layer), with an optional 3x3 stride-2 max-pool after `pool_at` of them (None:
after the last). The two x2 downsamplings of the stem contract are therefore each a conv stride, the max-pool or a
space-to-depth: s2d x prod(strides) x (2 with the pool) must be 4. Odd kernels pad 'same'; an even kernel is a
patch embedding (kernel = stride, no padding, as ConvNeXt's). `norm` and `act` apply to every layer."""
from __future__ import annotations

import inspect
import math
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml
from torch import nn

from .layers import ACTS, CONVNEXT_LN_EPS, LN_EPS, NORMS, conv_norm_act, output_widths, positive_ints
from .cost import cost
from .registry import StemError, register, spec

POINTS_DIR = Path(__file__).with_name("points")  # named points (python -m analyze space exports them): stems by name

CONTRACT_STRIDE = 4
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


# --- sampling ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Choices:
    """The values the sampler draws from, uniformly and independently (RegNet's AnyNet sampling)."""

    depths: tuple[int, ...] = (1, 2, 3, 4)
    widths: tuple[int, ...] = (16, 24, 32, 48, 64, 96)  # inner layers; the last is the stem's output width
    kernels: tuple[int, ...] = (3, 5, 7)  # odd kernels; a strided layer may also be a patch embedding
    patchify: bool = True  # a stride-s layer may take kernel s (kernel = stride, no padding)
    mechanisms: tuple[str, ...] = MECHANISMS  # for each of the two x2 downsamplings
    norms: tuple[str, ...] = ("bn", "ln")
    acts: tuple[str, ...] = ("relu", "silu", "gelu")


def sample(rng: random.Random, choices: Choices) -> dict[str, Any]:
    """One point: depth, then a mechanism for each x2 downsampling (a second max-pool is redrawn: the space has
    one), the conv strides on uniformly drawn layers, the pool's position, kernels, widths, norm and act."""
    n = rng.choice(choices.depths)
    first = rng.choice(choices.mechanisms)
    second = rng.choice([m for m in choices.mechanisms if not (first == m == "max")] or ["conv"])
    mechanisms = [first, second]
    strides = [1] * n
    for _ in range(mechanisms.count("conv")):
        strides[rng.randrange(n)] *= 2
    pool = "max" if "max" in mechanisms else "none"
    pool_at = rng.randint(1, n) if pool == "max" else None
    kernels = [rng.choice([k for k in choices.kernels if k >= s] + ([s] if choices.patchify and s > 1 else []))
               for s in strides]
    widths = [rng.choice(choices.widths) for _ in range(n - 1)] + [64]
    return dict(spec("space").defaults, widths=widths, kernels=kernels, strides=strides, pool=pool,
                pool_at=None if pool_at == n else pool_at, s2d=2 ** mechanisms.count("s2d"),
                norm=rng.choice(choices.norms), act=rng.choice(choices.acts))


def sample_points(n: int, seed: int, choices: Choices, in_channels: int, image_size: int,
                  band: tuple[float, float] | None = None, max_draws: int = 20000) -> list[dict[str, Any]]:
    """`n` distinct points drawn with `seed` (the same arguments give the same list), each inside the forward-FLOPs
    `band` (low, high) at `image_size` when given. Raises StemError when `max_draws` draws do not fill the list."""
    rng, points, seen = random.Random(seed), [], set()
    for _ in range(max_draws):
        if len(points) == n:
            break
        p = sample(rng, choices)
        key = repr(sorted(p.items()))
        if key in seen:
            continue
        seen.add(key)
        if band and not band[0] <= cost("space", in_channels, image_size, params=p)["flops"] <= band[1]:
            continue
        points.append(p)
    if len(points) < n:
        within = f" within {band[0] / 1e6:.2f}-{band[1] / 1e6:.2f} MFLOPs" if band else ""
        raise StemError(f"only {len(points)} of {n} distinct stems{within} in {max_draws} draws; "
                        "widen the cost band or the choices, or sample fewer stems.")
    return points


# --- design choices of a point, for the analysis -----------------------------------------------------------------

def design(p: dict[str, Any]) -> dict[str, str]:
    """The design choices of a point, as the labels its error distributions are split by."""
    strides, kernels, widths = list(p["strides"]), list(p["kernels"]), list(p["widths"])
    mechanisms = ["conv"] * sum(int(math.log2(s)) for s in strides) + ["max"] * (p["pool"] == "max") \
        + ["s2d"] * int(math.log2(p["s2d"]))
    return {
        "depth": str(len(widths)),
        "downsampling": "+".join(sorted(mechanisms)),
        "first conv stride": str(strides[0]),
        "largest kernel": str(max(k for k in kernels)),
        "patch embedding": "yes" if any(k % 2 == 0 for k in kernels) else "no",
        "widest inner layer": str(max(widths[:-1])) if len(widths) > 1 else "none",
        "norm": str(p["norm"]),
        "act": str(p["act"]),
    }


def code(p: dict[str, Any]) -> str:
    """A short readable name of a point, e.g. 's2d2 k5s2x32 max k3x64 bn relu'."""
    parts = [f"s2d{p['s2d']}"] if p["s2d"] > 1 else []
    for i, (w, k, s) in enumerate(zip(p["widths"], p["kernels"], p["strides"])):
        if p["pool"] == "max" and p["pool_at"] == i:
            parts.append("max")
        parts.append(f"k{k}s{s}x{w}" if s > 1 else f"k{k}x{w}")
    if p["pool"] == "max" and p["pool_at"] in (None, len(p["widths"])):
        parts.append("max")
    return " ".join([*parts, str(p["norm"]), str(p["act"])])


# --- named points: a sampled stem worth keeping, registered under its own name -------------------------------------

def register_point(name: str, params: dict[str, Any], source: str) -> None:
    """Register stem `name`: the `space` stem whose defaults are `params` (so `stem=name` runs that point, and its
    parameters stay overridable like any stem's). The point is checked here: a bad one never reaches a run."""
    sig = inspect.signature(space)
    unknown = sorted(set(params) - set(sig.parameters))
    if unknown:
        raise StemError(f"stem point {name!r} has unknown parameters {', '.join(unknown)}; "
                        f"the space's are: {', '.join(list(sig.parameters)[2:])}.")

    def point(in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
        return space(in_channels, out_channels, **kw)

    point.__signature__ = sig.replace(parameters=[p.replace(default=params.get(p.name, p.default))
                                                  for p in sig.parameters.values()])
    point.__annotations__ = space.__annotations__  # the config schema types the parameters from these
    register(name, family="space", source=source)(point)
    try:
        cost(name, 3, 32)
    except StemError as e:
        raise StemError(f"stem point {name!r} is not a valid point: {str(e).split(': ', 1)[-1]}") from None


def load_points(path: Path) -> list[str]:
    """Register every point of a YAML file {name: {params: {...}, source: "..."}}; returns their names."""
    try:
        entries = yaml.safe_load(path.read_text())
        named = [(str(n), dict(e["params"]), str(e.get("source", f"a named point of the stem space ({path.name})")))
                 for n, e in entries.items()]
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError) as e:
        raise StemError(f"{path} is not a stem points file ({type(e).__name__}); each entry needs "
                        "<name>: {params: {...}, source: ...} (python -m analyze space writes one).") from None
    for name, params, source in named:
        register_point(name, params, source)
    return [n for n, _, _ in named]


def load_installed_points(folder: Path = POINTS_DIR) -> None:
    """Register the points files in stems/points/; a bad one is named in a warning and skipped (its stems are then
    unknown names, refused as such), so that one broken file never stops every command at import."""
    for path in sorted(folder.glob("*.yaml")):
        try:
            load_points(path)
        except StemError as e:
            warnings.warn(f"{e} Its stems are not registered.", stacklevel=2)


load_installed_points()
