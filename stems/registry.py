"""The stem registry: a stem's registration is the one source of truth for its name, aliases, family,
source, parameters and place in the design space (timm's register / build / available pattern).

The stem contract: `out_channels` is the width the stem hands to the trunk, and the stem divides H and W by its
stride; a dry forward checks both when a stem is built. How a stem's own parameters reach out_channels is the
stem's (a stem with `widths` follows stems.layers.output_widths)."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .base import StemlabError, first_line

StemFactory = Callable[..., nn.Module]
PointOf = Callable[[dict[str, Any]], "dict[str, Any] | None"]
CONTRACT_STRIDE, CONTRACT_WIDTH = 4, 64  # the stem contract's defaults: (B, C, H, W) -> (B, 64, H/4, W/4)


class StemError(StemlabError):
    """A stem request that cannot be honoured; the message is one sentence naming the fix."""


@dataclass(frozen=True)
class StemSpec:
    """What the registry knows about one stem."""

    name: str  # the canonical name
    family: str  # e.g. "conv_stack", "large_kernel", "patchify"
    source: str  # the paper section or reference code it re-implements
    factory: StemFactory  # factory(in_channels, out_channels, **params) -> nn.Module
    defaults: dict[str, Any]  # the stem's own parameters with the source's defaults
    stride: int = CONTRACT_STRIDE  # contract: the stem divides H and W by this
    out_channels: int = CONTRACT_WIDTH  # contract: channels handed to the trunk
    point: PointOf | None = None  # its own parameters -> the `space` parameters of the same network (None: outside)
    outside: str = ""  # why the design space cannot express it (when it has no point)


_REGISTRY: dict[str, StemSpec] = {}
_ALIASES: dict[str, str] = {}  # alias -> canonical name


def register(name: str, *, family: str, source: str, point: PointOf | None = None, outside: str = "",
             aliases: tuple[str, ...] = (), stride: int = CONTRACT_STRIDE, out_channels: int = CONTRACT_WIDTH):
    """Decorator: register `factory(in_channels, out_channels, **params)` as stem `name`.

    Every keyword parameter after the two channel counts becomes a stem parameter
    (overridable as `stem.<param>=...` on the command line); its default is the source's value.
    Its place in the design space (stems/space.py) is declared here, exactly one of: `point`, a function of the
    stem's parameters giving the `space` parameters that build the same network (None for parameters the space
    cannot express), or `outside`, why the space cannot express the stem.
    `aliases` are further names for the same network (another source's name for it): `spec` and `build`
    accept them, `available()` lists only `name`, so a study of every stem trains each network once.
    """

    def decorate(factory: StemFactory) -> StemFactory:
        for n in (name, *aliases):
            if n in _REGISTRY or n in _ALIASES:
                raise ValueError(f"stem {n!r} is registered twice")
        if (point is None) == (not outside):
            raise TypeError(f"stem {name!r} must declare its place in the design space: register(..., point=<its "
                            "parameters -> the space's>) or register(..., outside=\"why the space cannot express it\")")
        params = list(inspect.signature(factory).parameters.values())
        if [p.name for p in params[:2]] != ["in_channels", "out_channels"]:
            raise TypeError(f"stem factory {factory.__name__} must start with (in_channels, out_channels)")
        defaults = {p.name: _plain(p.default) for p in params[2:]}
        _REGISTRY[name] = StemSpec(name, family, source, factory, defaults, stride, out_channels, point, outside)
        _ALIASES.update(dict.fromkeys(aliases, name))
        return factory

    return decorate


def _plain(value: Any) -> Any:
    """Tuples become lists so that a default reads like the YAML/CLI value that overrides it."""
    return list(value) if isinstance(value, tuple) else value


def available() -> list[str]:
    """Sorted canonical names of every registered stem (aliases are not listed: one name per network)."""
    return sorted(_REGISTRY)


def aliases() -> dict[str, str]:
    """{alias: canonical name} of every alias, sorted by alias."""
    return dict(sorted(_ALIASES.items()))


def spec(name: str) -> StemSpec:
    """The registration of stem `name` (an alias gives its canonical stem's registration)."""
    try:
        return _REGISTRY[_ALIASES.get(name, name)]
    except KeyError:
        raise StemError(f"unknown stem {name!r}; choose one of: {', '.join(available())}.") from None


def build(name: str, in_channels: int, out_channels: int | None = None, *, image_size: int | None = None,
          **params: Any) -> nn.Module:
    """Build stem `name` (or an alias) for `in_channels` input channels and `out_channels` output channels
    (the output width rule above; default: the spec's) and check it honours the stem contract.

    `image_size`, when given, is checked against the stem's stride (the contract needs H/stride exact)."""
    s = spec(name)
    out_channels = s.out_channels if out_channels is None else out_channels
    if image_size is not None:
        check_image_size(name, image_size)
    stem = make(s, in_channels, out_channels, params)
    check_contract(stem, s, in_channels, out_channels)
    return stem


def make(s: StemSpec, in_channels: int, out_channels: int, params: dict[str, Any]) -> nn.Module:
    """Call the factory of `s` with its defaults overridden by `params` (no contract check; the
    cost counters call it under torch.device('meta'))."""
    unknown = sorted(set(params) - set(s.defaults))
    if unknown:
        valid = ", ".join(s.defaults) or "none"
        raise StemError(f"stem {s.name!r} has no parameter {', '.join(unknown)}; its parameters are: {valid}.")
    if in_channels <= 0 or out_channels <= 0:
        raise StemError(f"stem {s.name!r} needs positive channel counts, got in_channels={in_channels}, "
                        f"out_channels={out_channels}.")
    try:
        return s.factory(in_channels, out_channels, **{**s.defaults, **params})
    except (ValueError, TypeError, RuntimeError) as e:
        given = {**({"out_channels": out_channels} if out_channels != s.out_channels else {}), **params}
        shown = ", ".join(f"{k}={v}" for k, v in given.items()) or "its defaults"
        raise StemError(f"stem {s.name!r} cannot be built with {shown}: {str(e).rstrip('.')}.") from None


def check_image_size(name: str, image_size: int) -> None:
    """The stem divides the image by its stride exactly, or the trunk's maps would be off by a pixel."""
    stride = spec(name).stride
    if image_size <= 0 or image_size % stride:
        lo = max(stride, image_size // stride * stride)
        raise StemError(f"input size {image_size} is not divisible by stem {name!r}'s stride {stride}; "
                        f"use a multiple of {stride} such as {lo} or {lo + stride}.")


def check_contract(stem: nn.Module, s: StemSpec, in_channels: int, out_channels: int, size: int | None = None) -> None:
    """Dry forward on a small input: the output must be (B, out_channels, H/stride, W/stride)."""
    size = size or 8 * s.stride
    x = torch.zeros(2, in_channels, size, size)
    was_training = stem.training
    stem.eval()
    try:
        with torch.no_grad():
            y = stem(x)
    except RuntimeError as e:
        raise StemError(f"stem {s.name!r} fails on a {tuple(x.shape)} input: {first_line(e)}") from None
    finally:
        stem.train(was_training)
    want = (2, out_channels, size // s.stride, size // s.stride)
    if tuple(y.shape) != want:
        raise StemError(
            f"stem {s.name!r} breaks the stem contract: a {tuple(x.shape)} input gives {tuple(y.shape)}, "
            f"not {want}; its factory must end in out_channels={out_channels} and its strides must multiply to {s.stride}."
        )
