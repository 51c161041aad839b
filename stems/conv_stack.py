"""Stacks of small convolutions in place of the 7x7: ResNet-C / timm 'deep' stems, ResNet-RS,
ConvNeXt's overlapping stem, and a generic stack whose widths, kernel sizes and strides are lists."""
from __future__ import annotations

import math

from torch import nn

from . import layers
from .layers import CONVNEXT_LN_EPS, act_layer, conv_norm_act, norm_layer, output_widths, positive_ints
from .registry import CONTRACT_STRIDE, register


def deep_point(p: dict, pool: str = "max", pool_at: int | None = None) -> dict:
    """The design-space point of a deep stem with parameters `p`: 3x3 convs, the first stride 2, then the max-pool
    (or, pool='none', a last stride-2 conv)."""
    n = len(p["widths"])
    strides = [2] + [1] * (n - 1) if pool == "max" else [2] + [1] * (n - 2) + [2]
    return dict(widths=p["widths"], kernels=[3] * n, strides=strides, pool=pool, pool_at=pool_at, norm=p["norm"],
                act=p["act"])


def _deep(in_channels: int, widths: list[int], norm: str, act: str, pool: str = "max") -> nn.Sequential:
    """timm's deep stem: 3x3 convs (the first stride 2) then the stride-2 reduction: a 3x3 max-pool, or
    (pool='conv', ResNet-RS) a 3x3 stride-2 conv + norm + act whose width is the last entry of widths."""
    n = len(widths) - (pool == "conv")
    if n < 1:
        raise ValueError(f"widths needs at least {1 + (pool == 'conv')} entries, got {widths}")
    strides = [2] + [1] * (n - 1) + ([2] if pool == "conv" else [])
    convs = layers.conv_stack(in_channels, widths, [3] * len(widths), strides, norm, act)
    return nn.Sequential(*convs, *([nn.MaxPool2d(3, 2, 1)] if pool == "max" else []))


@register("xresnet_3conv", family="conv_stack", aliases=("deep",), point=deep_point,
          source="He et al. 2019, Bag of Tricks §4.2 (ResNet-C); fastai xresnet; "
                 "timm resnet.py create_stem, stem_type='deep', stem_width=32")
def xresnet_3conv(in_channels: int, out_channels: int, widths: tuple[int, ...] = (32, 32, 64),
                  norm: str = "bn", act: str = "relu") -> nn.Module:
    """3x3 convs of the given widths (32-32-out), the first stride 2, then a 3x3 stride-2 max-pool.
    fastai's xresnet stem and timm's 'deep' stem at stem_width 32 are this same network."""
    return _deep(in_channels, output_widths(widths, out_channels), norm, act)


@register("deep_tiered", family="conv_stack", point=deep_point, source="timm resnet.py, stem_type='deep_tiered', stem_width=32 (3*(32//4), 32, 64)")
def deep_tiered(in_channels: int, out_channels: int, widths: tuple[int, ...] = (24, 32, 64),
                norm: str = "bn", act: str = "relu") -> nn.Module:
    """timm's tiered deep stem: 3x3 convs 24-32-out (first stride 2) + 3x3 stride-2 max-pool."""
    return _deep(in_channels, output_widths(widths, out_channels), norm, act)


@register("deep_wide", family="conv_stack",
          point=lambda p: {**deep_point({**p, "widths": p["widths"][:-1]}), "widths": p["widths"],
                           "kernels": [3, 3, 3, 1], "strides": [2, 1, 1, 1], "pool_at": 3},
          source="timm resnet.py, stem_type='deep', stem_width=64 (gluon ResNet-v1s: 64-64-128), "
                 "plus a 1x1 conv 128 -> 64 that timm's stem lacks (stemlab's, for the stem contract)")
def deep_wide(in_channels: int, out_channels: int, widths: tuple[int, ...] = (64, 64, 128, 64),
              norm: str = "bn", act: str = "relu") -> nn.Module:
    """The deep stem at stem_width 64 (3x3 convs 64-64-128, first stride 2, + max-pool), then a 1x1
    conv + norm + act projecting 128 to out_channels (the last entry of widths); the inner widths keep
    their values when out_channels changes. timm has no such projection: it feeds 128 channels to the
    first block, whose shortcut 1x1 projection does the same job; here it sits in the stem, after the pool,
    where it costs a quarter as much."""
    widths = output_widths(widths, out_channels)
    if len(widths) < 2:
        raise ValueError(f"widths needs the stack's widths and the projection width, got {widths}")
    return nn.Sequential(*_deep(in_channels, widths[:-1], norm, act), conv_norm_act(widths[-2], widths[-1], 1, 1, norm, act))


@register("deep_convpool", family="conv_stack", point=lambda p: deep_point(p, pool="none"),
          source="Bello et al. 2021, Revisiting ResNets (ResNet-RS stem: max-pool -> 3x3 s2 conv); timm resnet.py stem_type='deep', replace_stem_pool=True")
def deep_convpool(in_channels: int, out_channels: int, widths: tuple[int, ...] = (32, 32, 64, 64),
                  norm: str = "bn", act: str = "relu") -> nn.Module:
    """The deep stem 32-32-64 with its max-pool replaced by a 3x3 stride-2 conv + norm + act to
    out_channels (the last entry of widths). The inner widths keep their values when out_channels
    changes (timm would widen the whole stem with stem_width)."""
    return _deep(in_channels, output_widths(widths, out_channels), norm, act, pool="conv")


@register("conv2_s2", family="conv_stack",
          outside="its norm follows only the last conv and its activation sits between convs without a norm",
          source="Liu et al. 2022, ConvNeXt; timm convnext.py stem_type='overlap' (cf. Xiao et al. 2021, Early Convolutions)")
def conv2_s2(in_channels: int, out_channels: int, widths: tuple[int, ...] = (64, 64), bias: bool = True,
             norm: str = "ln", act: str = "none") -> nn.Module:
    """Two 3x3 stride-2 convs, then norm (ConvNeXt's overlapping stem: conv, conv, LayerNorm eps 1e-6).
    `act` (none in the source, timm's 'overlap_act' uses one) goes between the two convs. widths =
    [first conv, out_channels]; the first keeps its value when out_channels changes."""
    w = output_widths(widths, out_channels, 2)
    return nn.Sequential(nn.Conv2d(in_channels, w[0], 3, 2, 1, bias=bias), act_layer(act),
                         nn.Conv2d(w[0], w[1], 3, 2, 1, bias=bias), norm_layer(norm, w[1], CONVNEXT_LN_EPS))


@register("conv_stack", family="conv_stack",
          point=lambda p: dict(widths=p["widths"], kernels=p["kernel_sizes"], strides=p["strides"], pool="none",
                               norm=p["norm"], act=p["act"]),
          source="Xiao et al. 2021, Early Convolutions Help Transformers See Better (3x3 s2 convs + BN/ReLU, then 1x1), cut at stride 4")
def conv_stack(in_channels: int, out_channels: int, widths: tuple[int, ...] = (32, 64, 64),
               kernel_sizes: tuple[int, ...] = (3, 3, 1), strides: tuple[int, ...] = (2, 2, 1),
               norm: str = "bn", act: str = "relu") -> nn.Module:
    """A generic stack of conv + norm + act, one per entry of widths / kernel_sizes / strides.
    The defaults are Xiao et al.'s convolutional stem cut at stride 4: 3x3 stride-2 convs doubling
    the width, then a 1x1 conv to out_channels. The strides must multiply to the contract stride."""
    s = positive_ints("strides", strides)
    if math.prod(s) != CONTRACT_STRIDE:
        raise ValueError(f"strides {s} multiply to {math.prod(s)}, but the stem contract needs {CONTRACT_STRIDE}")
    return nn.Sequential(*layers.conv_stack(in_channels, output_widths(widths, out_channels), kernel_sizes, s, norm, act))
