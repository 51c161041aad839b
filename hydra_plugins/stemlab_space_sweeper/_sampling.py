"""The space sweeper's work outside Hydra: parse the cost band, draw the stems (stems.space), their overrides and
the sweep's plan file. Imports torch (through stems): space_sweeper.py imports it only when a sweep runs, so that
Hydra's plugin scan at every start stays light."""
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from stems import spec
from stems.base import StemlabError, atomic_write
from experiments.match import target_of
from stems.cost import cost
from stems.space import Choices, code, sample_points

STEM_KEYS = [f"stem.{k}" for k in spec("space").defaults]  # left out of a point's directory name (sample<NNN> says it)
BAND = re.compile(r"flops:([^:]+):([0-9]*\.?[0-9]+)")


class SamplingError(StemlabError):
    """A design-space sweep that cannot be drawn; the message is one sentence naming the fix."""


@dataclass(frozen=True)
class Sample:
    index: int
    params: Dict[str, Any]
    flops: int  # forward FLOPs of the stem at the runs' input size

    @property
    def code(self) -> str:
        return code(self.params)


def parse_band(band: Optional[str], shape: Tuple[int, int]) -> Optional[Tuple[float, float]]:
    """flops:<stem or number>:<tolerance> -> (low, high) forward FLOPs at the runs' (in_channels, size)."""
    if not band:
        return None
    m = BAND.fullmatch(str(band).strip())
    if not m or not 0 < float(m.group(2)) < 1:
        raise SamplingError(f"hydra.sweeper.band={band} is not valid; use flops:<stem or number>:<tolerance in (0, 1)>, "
                            "e.g. flops:resnet_7x7:0.1.")
    target = target_of("flops", m.group(1), shape[0], 64, shape[1])
    return target * (1 - float(m.group(2))), target * (1 + float(m.group(2)))


def draw(n: int, seed: int, choices: Dict[str, Any], shape: Tuple[int, int], band: Optional[str]) -> List[Sample]:
    """The sweep's stems: `n` distinct points of the space, drawn with `seed`, inside the band when set."""
    if n < 1:
        raise SamplingError(f"hydra.sweeper.samples={n} is not valid; use an integer ≥ 1.")
    try:
        picked = Choices(**{k: tuple(v) if isinstance(v, list) else v for k, v in choices.items()})
    except TypeError as e:
        raise SamplingError(f"hydra.sweeper.choices is not valid ({e}); its keys are those of stems.space.Choices.") from None
    points = sample_points(n, seed, picked, shape[0], shape[1], parse_band(band, shape))
    return [Sample(i, p, cost("space", shape[0], shape[1], params=p)["flops"]) for i, p in enumerate(points)]


def stem_overrides(params: Dict[str, Any]) -> List[str]:
    """`stem=space stem.widths=[…] …`: one sampled point as Hydra overrides."""
    def value(v: Any) -> str:
        if v is None:
            return "null"
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(map(str, v)) + "]"
        return str(v).lower() if isinstance(v, bool) else str(v)

    return ["stem=space", *(f"stem.{k}={value(v)}" for k, v in params.items())]


def write_plan(sweep_dir: Path, n: int, seed: int, choices: Dict[str, Any], band: Optional[str],
               shape: Tuple[int, int], samples: List[Sample]) -> None:
    """`<sweep.dir>/space.json`: what was drawn and how, for the analysis (python -m analyze space)."""
    plan = {"samples": n, "sample_seed": seed, "band": band, "choices": choices,
            "in_channels": shape[0], "image_size": shape[1],
            "points": [{"index": s.index, "dir": f"sample{s.index:03d}", "code": s.code, "flops": s.flops,
                        "params": s.params} for s in samples]}
    atomic_write(sweep_dir / "space.json", json.dumps(plan, indent=1))
