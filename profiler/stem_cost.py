"""What a stem costs by counting: forward FLOPs (the profiler's one FLOP counter, profiler.counting) and parameters,
on the meta device (shapes only, no arithmetic), so that a search over widths (experiments.match) or the design
space's FLOPs band is cheap."""
from __future__ import annotations

from typing import Any

import torch

from stems import spec  # the registry, filled (named points included)
from stems.registry import make

from .counting import count_flops_whole_model


def cost(name: str, in_channels: int, image_size: int, out_channels: int | None = None,
         params: dict[str, Any] | None = None) -> dict[str, int]:
    """{'flops': forward FLOPs on a (1, C, S, S) input (the profiler's whole-model count: FlopCounterMode's
    formulas, 2 x MACs of convs and matmuls), 'params': parameter count} of stem `name` with `params` overriding
    its defaults."""
    s = spec(name)
    with torch.device("meta"):
        stem = make(s, in_channels, s.out_channels if out_channels is None else out_channels, dict(params or {}))
    flops, _ = count_flops_whole_model(stem, torch.empty(1, in_channels, image_size, image_size, device="meta"),
                                       backward=False)
    return {"flops": int(flops), "params": sum(p.numel() for p in stem.parameters())}
