"""Patchify stems: patches embedded by one strided convolution (ViT / ConvNeXt / PVT)."""
from __future__ import annotations

from torch import nn

from .layers import CONVNEXT_LN_EPS, LN_EPS, act_layer, norm_layer, positive_ints
from .registry import register


def patch_point(k: int, s: int, p: dict, pool: str = "none", ln_eps: float = CONVNEXT_LN_EPS) -> dict:
    """The design-space point of a patch embedding: one k x k stride-s conv with a bias, then the norm."""
    return dict(widths=[64], kernels=[k], strides=[s], pool=pool, norm=p["norm"], act=p["act"], bias=True, ln_eps=ln_eps)


@register("patchify_4x4", family="patchify", point=lambda p: patch_point(4, 4, p), source="Liu et al. 2022, A ConvNet for the 2020s §2.3 (ConvNeXt stem)")
def patchify_4x4(in_channels: int, out_channels: int, norm: str = "ln", act: str = "none") -> nn.Module:
    """4x4 stride-4 conv (with bias, as in ConvNeXt) + norm (ConvNeXt's LayerNorm, eps 1e-6) (+ act, none
    in the source)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 4, 4), norm_layer(norm, out_channels, CONVNEXT_LN_EPS),
                         act_layer(act))


@register("patchify_2x2_s2", family="patchify",
          point=lambda p: patch_point(2, 2, p, pool="max") if p["pool"] == "max" else None,
          source="ConvNeXt's patchify (Liu et al. 2022 §2.3) at patch 2, then ResNet's 3x3 stride-2 max-pool (He et al. 2016)")
def patchify_2x2_s2(in_channels: int, out_channels: int, pool: str = "max", norm: str = "ln", act: str = "none") -> nn.Module:
    """2x2 stride-2 patch conv + norm (ConvNeXt's LayerNorm, eps 1e-6) (+ act), then a stride-2 pool:
    `max` (3x3, ResNet's) or `avg` (2x2)."""
    pools = {"max": lambda: nn.MaxPool2d(3, 2, 1), "avg": lambda: nn.AvgPool2d(2, 2)}
    if pool not in pools:
        raise ValueError(f"pool must be max or avg, not {pool!r}")
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 2, 2), norm_layer(norm, out_channels, CONVNEXT_LN_EPS),
                         act_layer(act),
                         pools[pool]())


@register("patchify_overlap", family="patchify", point=lambda p: patch_point(p["kernel_size"], 4, p, ln_eps=LN_EPS),
          source="Wang et al. 2022, PVT v2 (overlapping patch embedding: 7x7 stride-4 conv + LayerNorm, eps 1e-5)")
def patchify_overlap(in_channels: int, out_channels: int, kernel_size: int = 7, norm: str = "ln", act: str = "none") -> nn.Module:
    """kernel_size x kernel_size stride-4 conv with padding kernel_size//2 (overlapping patches) + norm
    (PVT v2's nn.LayerNorm at torch's default eps 1e-5)."""
    (k,) = positive_ints("kernel_size", kernel_size)
    if k < 4:
        raise ValueError(f"kernel_size must be at least the stride 4 so that patches cover the image, got {k}")
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, k, 4, k // 2), norm_layer(norm, out_channels), act_layer(act))
