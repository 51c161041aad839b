"""Building blocks shared by the stem families: conv + norm + activation, chosen by name."""
from __future__ import annotations

from torch import nn

from .registry import CONTRACT_WIDTH

NORMS = ("bn", "ln", "none")
ACTS = ("relu", "leaky_relu", "gelu", "silu", "none")
LN_EPS = 1e-5  # torch's LayerNorm default, and PVT v2's (its patch embedding's nn.LayerNorm(embed_dim))
CONVNEXT_LN_EPS = 1e-6  # ConvNeXt's LayerNorm (the official code and timm convnext.py's LayerNorm2d)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (ConvNeXt's channels-first LayerNorm)."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def norm_layer(kind: str, channels: int, ln_eps: float = LN_EPS) -> nn.Module:
    """`bn` (BatchNorm2d, torch's eps 1e-5), `ln` (channels LayerNorm with eps `ln_eps`: each stem passes
    its source's) or `none`."""
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "ln":
        return LayerNorm2d(channels, eps=ln_eps)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, not {kind!r}")


def act_class(kind: str) -> type[nn.Module]:
    """The activation class for `kind` (fastai's blocks take a class, not an instance)."""
    # leaky_relu keeps torch's 0.01 slope: TResNet's stem (InplaceABN leaky_relu, 1e-2) and timm's nn.LeakyReLU
    layers = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU, "silu": nn.SiLU, "none": nn.Identity}
    if kind not in layers:
        raise ValueError(f"act must be one of {', '.join(ACTS)}, not {kind!r}")
    return layers[kind]


def act_layer(kind: str) -> nn.Module:
    """`relu`, `leaky_relu`, `gelu`, `silu` or `none`."""
    cls = act_class(kind)
    return cls(inplace=True) if kind in ("relu", "leaky_relu", "silu") else cls()


def positive_ints(name: str, values, length: int | None = None) -> list[int]:
    """Validate a list parameter (widths, kernel sizes, strides): positive integers, optionally of a given length."""
    values = [values] if isinstance(values, int) else list(values)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values):
        raise ValueError(f"{name} must be positive integers, got {values}")
    if length is not None and len(values) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(values)} ({values})")
    return values


def output_widths(widths, out_channels: int, length: int | None = None) -> list[int]:
    """The output width rule of every stem with `widths`: its layers' widths, the output width last, with that last
    entry set to out_channels. The inner widths keep the values given (the source's by default) and do not scale
    with out_channels, so `stem.out_channels=96` widens the output and `stem.widths=[24,32,64]` changes the inner
    widths. A last width that is neither out_channels nor the contract's default width (64, where every default
    `widths` ends) contradicts out_channels: it is refused rather than silently replaced."""
    widths = positive_ints("widths", widths, length)
    if widths[-1] not in (out_channels, CONTRACT_WIDTH):
        raise ValueError(f"the widths end in {widths[-1]}, but the last width is the output width, "
                         f"out_channels={out_channels}; set stem.out_channels={widths[-1]} or end the widths in {out_channels}")
    return [*widths[:-1], out_channels]


def conv_norm_act(ni: int, nf: int, ks: int = 3, stride: int = 1, norm: str = "bn", act: str = "relu",
                  padding: int | None = None, groups: int = 1, ln_eps: float = LN_EPS,
                  bias: bool | None = None) -> nn.Sequential:
    """Conv + norm + activation; `padding` defaults to 'same' for odd kernels, `bias` to none before a norm."""
    if ni <= 0 or nf <= 0:
        raise ValueError(f"channel counts must be positive, got {ni} -> {nf}")
    if ks <= 0 or stride <= 0:
        raise ValueError(f"kernel size and stride must be positive, got ks={ks}, stride={stride}")
    conv = nn.Conv2d(ni, nf, ks, stride, ks // 2 if padding is None else padding,
                     bias=norm == "none" if bias is None else bias, groups=groups)
    return nn.Sequential(conv, norm_layer(norm, nf, ln_eps), act_layer(act))


def conv_stack(ni: int, widths, kernel_sizes, strides, norm: str, act: str) -> list[nn.Module]:
    """One conv_norm_act per width: the layers of a plain convolution stack (validated lists)."""
    widths = positive_ints("widths", widths)
    kernel_sizes = positive_ints("kernel_sizes", kernel_sizes, len(widths))
    strides = positive_ints("strides", strides, len(widths))
    chans = [ni, *widths]
    return [conv_norm_act(a, b, k, s, norm, act) for a, b, k, s in zip(chans, chans[1:], kernel_sizes, strides)]
