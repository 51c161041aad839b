"""The labels of a point of the stem design space (stems.space): its design choices, which a design-space study's
error distributions are split by, and a short readable name."""
from __future__ import annotations

import math
from typing import Any


def design(p: dict[str, Any]) -> dict[str, str]:
    """The design choices of a point, as the labels its error distributions are split by."""
    strides, kernels, widths = list(p["strides"]), list(p["kernels"]), list(p["widths"])
    mechanisms = ["conv"] * sum(int(math.log2(s)) for s in strides) + ["max"] * (p["pool"] == "max") \
        + ["s2d"] * int(math.log2(p["s2d"]))
    return {
        "depth": str(len(widths)),
        "downsampling": "+".join(sorted(mechanisms)),
        "first conv stride": str(strides[0]),
        "largest kernel": str(max(k for k in kernels)),
        "patch embedding": "yes" if any(k % 2 == 0 for k in kernels) else "no",
        "widest inner layer": str(max(widths[:-1])) if len(widths) > 1 else "none",
        "norm": str(p["norm"]),
        "act": str(p["act"]),
    }


def code(p: dict[str, Any]) -> str:
    """A short readable name of a point, e.g. 's2d2 k5s2x32 max k3x64 bn relu'."""
    parts = [f"s2d{p['s2d']}"] if p["s2d"] > 1 else []
    for i, (w, k, s) in enumerate(zip(p["widths"], p["kernels"], p["strides"])):
        if p["pool"] == "max" and p["pool_at"] == i:
            parts.append("max")
        parts.append(f"k{k}s{s}x{w}" if s > 1 else f"k{k}x{w}")
    if p["pool"] == "max" and p["pool_at"] in (None, len(p["widths"])):
        parts.append("max")
    return " ".join([*parts, str(p["norm"]), str(p["act"])])
