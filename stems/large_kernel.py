"""Large-kernel stems: the 7x7 stride-2 convolution of the original ResNet."""
from __future__ import annotations

from torch import nn

from .layers import conv_norm_act, output_widths, positive_ints
from .registry import register


@register("resnet_7x7", family="large_kernel",
          point=lambda p: dict(widths=[64], kernels=[p["kernel_size"]], strides=[2], norm=p["norm"], act=p["act"]),
          source="He et al. 2016, Deep Residual Learning (conv1 + maxpool); torchvision resnet")
def resnet_7x7(in_channels: int, out_channels: int, kernel_size: int = 7, norm: str = "bn", act: str = "relu") -> nn.Module:
    """kernel_size x kernel_size stride-2 conv + norm + act, then 3x3 stride-2 max-pool."""
    return nn.Sequential(conv_norm_act(in_channels, out_channels, kernel_size, 2, norm, act),
                         nn.MaxPool2d(3, 2, 1))


@register("resnet_7x7_nopool", family="large_kernel",
          point=lambda p: dict(widths=p["widths"], kernels=[p["kernel_size"], 3], strides=[2, 2], pool="none",
                               norm=p["norm"], act=p["act"]),
          source="timm resnet.py (stem_type='', replace_stem_pool=True); Bello et al. 2021, ResNet-RS")
def resnet_7x7_nopool(in_channels: int, out_channels: int, widths: tuple[int, ...] = (64, 64), kernel_size: int = 7,
                      norm: str = "bn", act: str = "relu") -> nn.Module:
    """The 7x7 stride-2 conv, with the max-pool replaced by a 3x3 stride-2 conv + norm + act (timm's
    replace_stem_pool), so that the pooling's effect can be isolated. widths = [7x7 conv, 3x3 conv =
    out_channels]; the 7x7 conv keeps its width when out_channels changes."""
    w = output_widths(widths, out_channels, 2)
    (k,) = positive_ints("kernel_size", kernel_size)
    return nn.Sequential(conv_norm_act(in_channels, w[0], k, 2, norm, act), conv_norm_act(w[0], w[1], 3, 2, norm, act))
