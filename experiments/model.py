"""Model assembly: a registered stem + the fixed ResNet trunk (fastai's ResBlock) + a pooling/linear head.

The model is an nn.Sequential whose top-level children are named stem, stage1..stage4, head, so every
per-layer table can be grouped by them."""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Mapping

from fastai.layers import ResBlock
from fastai.vision.models.xresnet import init_cnn
from omegaconf import DictConfig, OmegaConf
from torch import nn

import stems
from stems.base import StemlabError
from .match import match_params
from .schema import STEM_KEYS, TrainConf
from .streams import drawing, state_digest


log = logging.getLogger("stemlab")
GROUPS = ("stem", "stage1", "stage2", "stage3", "stage4", "head")  # build_model's top-level children (a 4-stage trunk)


class TrunkError(StemlabError):
    """A trunk configuration that cannot be built; the message is one sentence naming the fix."""


def plain(node: Mapping[str, Any]) -> dict[str, Any]:
    """A config node as plain Python: OmegaConf's lists become lists (the registry compares and stores them)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def stem_params(stem_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The factory parameters of a stem config node."""
    return {k: v for k, v in plain(stem_cfg).items() if k not in STEM_KEYS}


def resolve_stem(stem_cfg: Mapping[str, Any], in_channels: int, image_size: int | None, device: str = "cpu",
                 batch_size: int = TrainConf.bs, precision: str = "fp32",
                 channels_last: bool = False) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The stem node with `stem.match` applied: widths scaled to the target cost (experiments.match) and match
    cleared, plus the match record for result.json (None without a match).

    A `time:` match times the stem on `device` at `batch_size`, `precision` and memory format: a run passes its
    training device, train.bs and the format it trains in."""
    node = plain(stem_cfg)
    match = node.get("match")
    if not match:
        return node, None
    if image_size is None:
        raise stems.StemError(f"stem.match={match} needs the run's input size; pass image_size to build_model.")
    name = node["name"]
    out = node.get("out_channels") or stems.spec(name).out_channels
    params, info = match_params(name, in_channels, out, image_size, str(match), stem_params(node),
                                device=device, batch_size=batch_size, precision=precision,
                                channels_last=channels_last)
    unit = (lambda v: f"{v * 1e3:.2f} ms") if info["target_kind"] == "time" else (lambda v: f"{v:,.0f}")
    log.info("stem.match=%s: %s widths %s, %s %s for a target of %s at %d px", match, name, params["widths"],
             info["target_kind"], unit(info["achieved_value"]), unit(info["target_value"]), image_size)
    return {**node, **params, "match": None}, {**info, "widths": params["widths"], "image_size": image_size}


def build_stage(ni: int, nf: int, blocks: int, stride: int, expansion: int) -> nn.Sequential:
    """`blocks` fastai ResBlocks (ResNet-D shortcut); ni/nf are the pre-expansion widths, as in fastai's xresnet."""
    return nn.Sequential(*[ResBlock(expansion, ni if i == 0 else nf, nf, stride=stride if i == 0 else 1)
                           for i in range(blocks)])


def build_trunk(stem_out: int, layers: list[int], widths: list[int], expansion: int) -> list[nn.Sequential]:
    """The four stages; stage 1 keeps the stem's resolution, stages 2-4 halve it."""
    if len(layers) != len(widths):
        raise TrunkError(f"trunk.layers ({len(layers)} stages) and trunk.widths ({len(widths)}) must have the same length.")
    if stem_out % expansion:
        raise TrunkError(f"a bottleneck trunk (expansion {expansion}) needs stem.out_channels divisible by {expansion}, "
                         f"not {stem_out}; change stem.out_channels.")
    ins = [stem_out // expansion, *widths[:-1]]
    return [build_stage(ni, nf, n, 1 if i == 0 else 2, expansion)
            for i, (ni, nf, n) in enumerate(zip(ins, widths, layers))]


def build_model(stem_cfg: Mapping[str, Any], trunk_cfg: Mapping[str, Any], in_channels: int, num_classes: int,
                image_size: int | None = None, seed: int = 0) -> nn.Sequential:
    """stem (from the registry, contract-checked) + trunk stages + head, initialised as fastai's xresnet.

    The stem's weights come from the `stem` random stream of `seed`, the trunk's and head's from the `trunk` stream
    (experiments.streams): at one seed every stem meets the same initial trunk and head, whatever it drew. With
    `stem.match` set, the stem's widths are first scaled to the target at `image_size` (resolve_stem)."""
    stem_cfg, _ = resolve_stem(stem_cfg, in_channels, image_size)
    out = stem_cfg.get("out_channels")
    with drawing(seed, "stem"):
        stem = stems.build(stem_cfg["name"], in_channels, out, image_size=image_size, **stem_params(stem_cfg))
        init_cnn(stem)
    out = out or stems.spec(stem_cfg["name"]).out_channels
    with drawing(seed, "trunk"):
        stages = build_trunk(out, list(trunk_cfg["layers"]), list(trunk_cfg["widths"]), int(trunk_cfg["expansion"]))
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(trunk_cfg["widths"][-1] * trunk_cfg["expansion"], num_classes))
        for part in (*stages, head):
            init_cnn(part)
    return nn.Sequential(OrderedDict(stem=stem, **{f"stage{i + 1}": s for i, s in enumerate(stages)}, head=head))


def trunk_digest(model: nn.Sequential) -> str:
    """Digest of the trunk's and head's state (every group but the stem): equal for runs that share their
    initialisation (the record's pairing.trunk_init)."""
    return state_digest(module for name, module in model.named_children() if name != "stem")
