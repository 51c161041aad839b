"""Light stems: depthwise-separable convolutions (MobileNet)."""
from __future__ import annotations

from torch import nn

from .layers import conv_norm_act, output_widths
from .registry import register


@register("dw_separable", family="light", outside="depthwise convolutions (groups) are outside the space",
          source="Howard et al. 2017, MobileNets Table 1 (conv s2, then dw 3x3 + pw 1x1 blocks, the second dw stride 2)")
def dw_separable(in_channels: int, out_channels: int, widths: tuple[int, ...] = (32, 64, 64),
                 norm: str = "bn", act: str = "relu") -> nn.Module:
    """MobileNet v1's first five layers: 3x3 s2 conv (32), dw 3x3 + pw 1x1 (64), dw 3x3 s2 + pw 1x1 to the
    output width (MobileNet's 128 becomes out_channels, 64 by default). widths = [conv, pw, ..., last pw =
    out_channels]; the last
    depthwise conv has stride 2, the others stride 1. Every conv is followed by norm + act, as in the paper."""
    w = output_widths(widths, out_channels)
    if len(w) < 2:
        raise ValueError(f"widths needs the first conv's width and at least one pointwise width, got {w}")
    layers = [conv_norm_act(in_channels, w[0], 3, 2, norm, act)]
    for i, (ni, nf) in enumerate(zip(w, w[1:])):
        stride = 2 if i == len(w) - 2 else 1
        layers += [conv_norm_act(ni, ni, 3, stride, norm, act, groups=ni), conv_norm_act(ni, nf, 1, 1, norm, act)]
    return nn.Sequential(*layers)
