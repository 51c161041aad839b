"""Space-to-depth stems: rearrange 4x4 pixel blocks into channels, then one conv (TResNet)."""
from __future__ import annotations

from torch import nn

from .layers import conv_norm_act, positive_ints
from .registry import register


@register("space_to_depth", family="space_to_depth",
          point=lambda p: dict(widths=[64], kernels=[p["kernel_size"]], strides=[1], pool="none", s2d=p["block_size"],
                               norm=p["norm"], act=p["act"]) if p["block_size"] == 4 else None,
          source="Ridnik et al. 2021, TResNet (SpaceToDepth stem); timm tresnet.py")
def space_to_depth(in_channels: int, out_channels: int, block_size: int = 4, kernel_size: int = 3,
                   norm: str = "bn", act: str = "leaky_relu") -> nn.Module:
    """Pixel-unshuffle by block_size (C -> 16C channels at H/4), then a kernel_size conv + norm + act
    (TResNet: 3x3, BN, leaky ReLU). TResNet orders the 16C channels (dy, dx, c) and pixel_unshuffle
    (c, dy, dx); that is a fixed permutation of the conv's input channels, so the function class is the same."""
    (b,) = positive_ints("block_size", block_size)
    (k,) = positive_ints("kernel_size", kernel_size)
    return nn.Sequential(nn.PixelUnshuffle(b), conv_norm_act(in_channels * b * b, out_channels, k, 1, norm, act))
