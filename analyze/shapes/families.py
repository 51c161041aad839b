"""The layer families of ``python -m analyze shapes``: single conv layers along the ladder a CNN walks down.

Every family uses the same ladder of input shapes, channels × map size with C·S fixed (C·S = 3584):
224²×16 (a stem's end of the network), 112²×32, 56²×64, 28²×128, 14²×256, 7²×512.  A dense conv
C→C costs 2·B·C²·k²·S² FLOPs, so along this ladder its FLOPs stay the same (iso-FLOP): only the
shape changes, from few filters on big maps to many filters on small ones.  The depthwise conv
costs 2·B·C·9·S², which halves at each step (kept on the same ladder so that the shapes compare,
not the FLOPs); the stride-2 conv C→2C halves the map and doubles the channels, iso-FLOP again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from stems.base import StemlabError

__all__ = ["LayerSpec", "FAMILIES", "LADDER", "PRECISIONS", "FORMATS", "family_layers", "ShapesError"]

PRECISIONS = ("fp32", "bf16", "fp16")  # fp32: no autocast; the others: torch.autocast in that dtype
FORMATS = ("contiguous", "channels_last")
# (channels, map size): C·S = 3584 at every rung
LADDER = [(16, 224), (32, 112), (64, 56), (128, 28), (256, 14), (512, 7)]


class ShapesError(StemlabError):
    """A bad request to the shapes command, with one sentence saying what to change."""


@dataclass(frozen=True)
class LayerSpec:
    """One conv layer: C_in→C_out, k×k, stride, groups, on S×S input maps."""

    family: str
    channels: int
    channels_out: int
    size: int
    kernel: int
    stride: int
    groups: int

    @property
    def size_out(self) -> int:
        return (self.size + 2 * (self.kernel // 2) - self.kernel) // self.stride + 1

    @property
    def label(self) -> str:
        return f"{self.size}²×{self.channels}"

    def row(self) -> dict:
        return {**asdict(self), "size_out": self.size_out}


@dataclass(frozen=True)
class Family:
    description: str
    iso_flop: bool
    kernel: int
    stride: int
    widen: int  # channels_out = widen × channels
    depthwise: bool = False


FAMILIES: dict[str, Family] = {
    "conv3x3": Family("3×3 conv C→C, stride 1", True, 3, 1, 1),
    "conv1x1": Family("1×1 conv C→C", True, 1, 1, 1),
    "dw3x3": Family("depthwise 3×3 conv C→C (groups = C), stride 1; FLOPs halve per rung", False, 3, 1, 1, True),
    "conv3x3_s2": Family("3×3 conv C→2C, stride 2 (halves the map)", True, 3, 2, 2),
}


def family_layers(name: str) -> list[LayerSpec]:
    """The layers of family `name`, from big thin maps to small wide ones."""
    if name not in FAMILIES:
        raise ShapesError(f"unknown layer family {name!r}; choose from {', '.join(FAMILIES)}.")
    f = FAMILIES[name]
    return [LayerSpec(name, c, f.widen * c, s, f.kernel, f.stride, c if f.depthwise else 1)
            for c, s in LADDER if s % f.stride == 0]
