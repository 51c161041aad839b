"""The space sweeper's work outside Hydra: the sampler (RegNet's: points of stems.space drawn uniformly and
independently), the cost band, the sweep's stems, their overrides and the plan file. Imports torch (through
stems): space_sweeper.py imports it only when a sweep runs, so that Hydra's plugin scan at every start stays light."""
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from stems import StemError, spec
from stems.base import StemlabError, atomic_write
from experiments.match import target_of
from profiler.stem_cost import cost
from stems.registry import CONTRACT_WIDTH
from stems.space import MECHANISMS
from stems.space_labels import code

@dataclass(frozen=True)
class Choices:
    """The values the sampler draws from, uniformly and independently (RegNet's AnyNet sampling)."""

    depths: tuple[int, ...] = (1, 2, 3, 4)
    widths: tuple[int, ...] = (16, 24, 32, 48, 64, 96)  # inner layers; the last is the stem's output width
    kernels: tuple[int, ...] = (3, 5, 7)  # odd kernels; a strided layer may also be a patch embedding
    patchify: bool = True  # a stride-s layer may take kernel s (kernel = stride, no padding)
    mechanisms: tuple[str, ...] = MECHANISMS  # for each of the two x2 downsamplings
    norms: tuple[str, ...] = ("bn", "ln")
    acts: tuple[str, ...] = ("relu", "silu", "gelu")


def sample(rng: random.Random, choices: Choices) -> dict[str, Any]:
    """One point: depth, then a mechanism for each x2 downsampling (a second max-pool is redrawn: the space has
    one), the conv strides on uniformly drawn layers, the pool's position, kernels, widths, norm and act."""
    n = rng.choice(choices.depths)
    first = rng.choice(choices.mechanisms)
    second = rng.choice([m for m in choices.mechanisms if not (first == m == "max")] or ["conv"])
    mechanisms = [first, second]
    strides = [1] * n
    for _ in range(mechanisms.count("conv")):
        strides[rng.randrange(n)] *= 2
    pool = "max" if "max" in mechanisms else "none"
    pool_at = rng.randint(1, n) if pool == "max" else None
    kernels = [rng.choice([k for k in choices.kernels if k >= s] + ([s] if choices.patchify and s > 1 else []))
               for s in strides]
    widths = [rng.choice(choices.widths) for _ in range(n - 1)] + [CONTRACT_WIDTH]
    return dict(spec("space").defaults, widths=widths, kernels=kernels, strides=strides, pool=pool,
                pool_at=None if pool_at == n else pool_at, s2d=2 ** mechanisms.count("s2d"),
                norm=rng.choice(choices.norms), act=rng.choice(choices.acts))


def sample_points(n: int, seed: int, choices: Choices, in_channels: int, image_size: int,
                  band: tuple[float, float] | None = None, max_draws: int = 20000) -> list[dict[str, Any]]:
    """`n` distinct points drawn with `seed` (the same arguments give the same list), each inside the forward-FLOPs
    `band` (low, high) at `image_size` when given. Raises StemError when `max_draws` draws do not fill the list."""
    rng, points, seen = random.Random(seed), [], set()
    for _ in range(max_draws):
        if len(points) == n:
            break
        p = sample(rng, choices)
        key = repr(sorted(p.items()))
        if key in seen:
            continue
        seen.add(key)
        if band and not band[0] <= cost("space", in_channels, image_size, params=p)["flops"] <= band[1]:
            continue
        points.append(p)
    if len(points) < n:
        within = f" within {band[0] / 1e6:.2f}-{band[1] / 1e6:.2f} MFLOPs" if band else ""
        raise StemError(f"only {len(points)} of {n} distinct stems{within} in {max_draws} draws; "
                        "widen the cost band or the choices, or sample fewer stems.")
    return points


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
        raise SamplingError(f"hydra.sweeper.choices is not valid ({e}); its keys are those of the sampler's Choices.") from None
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
