"""ResNet-block stems: a stride-2 conv followed by fastai residual blocks, the last of them stride 2
in place of the max-pool (the stem gets the trunk's own building block)."""
from __future__ import annotations

from torch import nn

from .base import quiet_fastai_import

quiet_fastai_import()
from fastai.layers import ConvLayer, NormType, ResBlock  # noqa: E402  (after the filter)

from .layers import act_class, output_widths, positive_ints
from .registry import register

# fastai's blocks know BatchNorm or nothing; its ResBlock keeps BatchNorm on the shortcut's 1x1 projection
_FASTAI_NORMS = {"bn": NormType.Batch, "none": None}


def _fastai_norm(norm: str):
    if norm not in _FASTAI_NORMS:
        raise ValueError(f"the fastai ResBlock stems take norm bn or none, not {norm!r}")
    return _FASTAI_NORMS[norm]


def _resblock_stem(in_channels: int, widths: list[int], expansion: int, norm: str, act: str) -> nn.Sequential:
    """ConvLayer 3x3 s2 to widths[0]; one ResBlock per further width, stride 1 except the last (stride 2)."""
    if len(widths) < 2:
        raise ValueError(f"widths needs the conv's width and at least one block's width, got {widths}")
    if any(w % expansion for w in widths):
        raise ValueError(f"widths must be multiples of the expansion {expansion}, got {widths}")
    nt, ac = _fastai_norm(norm), act_class(act)
    blocks = [ResBlock(expansion, ni // expansion, nf // expansion, stride=2 if i == len(widths) - 2 else 1,
                       norm_type=nt, act_cls=ac)
              for i, (ni, nf) in enumerate(zip(widths, widths[1:]))]
    return nn.Sequential(ConvLayer(in_channels, widths[0], 3, stride=2, norm_type=nt, act_cls=ac), *blocks)


@register("resblock", family="resblock", outside="residual blocks are outside the space",
          source="stemlab's own combination: the ResNet-C deep stem (He et al. 2019, Bag of Tricks §4.2) with its "
                 "later convs and max-pool replaced by fastai layers.ResBlock (basic, ResNet-D shortcut, ibid. §4.2)")
def resblock(in_channels: int, out_channels: int, widths: tuple[int, ...] = (32, 32, 64),
             norm: str = "bn", act: str = "relu") -> nn.Module:
    """3x3 stride-2 conv (32), a basic ResBlock 32->32, then a stride-2 basic ResBlock 32->out where
    ResNet has its max-pool. widths = [conv, block, ..., stride-2 block = out_channels]."""
    return _resblock_stem(in_channels, output_widths(widths, out_channels), 1, norm, act)


@register("resblock_bottleneck", family="resblock", outside="residual blocks are outside the space",
          source="stemlab's own combination: a 3x3 s2 conv, then fastai layers.ResBlock bottlenecks (expansion 4, "
                 "ResNet-D shortcut: He et al. 2019, Bag of Tricks §4.2; bottleneck: He et al. 2016 §4.1), the last stride 2")
def resblock_bottleneck(in_channels: int, out_channels: int, widths: tuple[int, ...] = (32, 64, 64),
                        expansion: int = 4, norm: str = "bn", act: str = "relu") -> nn.Module:
    """3x3 stride-2 conv (32), a bottleneck ResBlock 32->64 (1x1, 3x3, 1x1 with inner width 64/4),
    then a stride-2 bottleneck ResBlock 64->out (inner width out/4) in place of the max-pool.
    Every width, out_channels included, must be a multiple of the expansion."""
    (e,) = positive_ints("expansion", expansion)
    if e == 1:
        raise ValueError("expansion 1 makes fastai's ResBlock a basic block; use stem=resblock for that")
    return _resblock_stem(in_channels, output_widths(widths, out_channels), e, norm, act)
