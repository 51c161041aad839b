"""Hydra configuration: the stem group filled from the registry, and command-line checks that turn a
bad choice into one sentence before Hydra starts."""
from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

import stems

from .model import STEM_KEYS

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class ConfigError(ValueError):
    """A command-line override that names something that does not exist."""


def stem_node(name: str) -> dict:
    """A stem's config node: its name, the contract's out_channels, `match`, and its parameters' defaults."""
    s = stems.spec(name)
    return {"name": name, "out_channels": s.out_channels, "match": None, **s.defaults}


def register_configs() -> None:
    """Put every registered stem in Hydra's `stem` group (registering a stem is the only step needed)."""
    cs = ConfigStore.instance()
    for name in stems.available():
        cs.store(group="stem", name=name, node=stem_node(name))


def options(group: str) -> list[str]:
    """The choices of a config group: registered stems, or the YAML files of conf/<group>/."""
    if group == "stem":
        return stems.available()
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def default_choice(group: str) -> str:
    """The choice conf/config.yaml's defaults list makes for `group`."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml").defaults)
    return next(d[group] for d in defaults if isinstance(d, dict) and group in d)


def check_overrides(overrides: list[str]) -> None:
    """Unknown group choices (stem=nope, trunk=…, data=…) and unknown stem parameters, in one sentence each.

    Hydra would also refuse them, but in several lines and without the stem's parameter list."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:
        return  # a syntax error: Hydra's own message says where
    choices = {}
    for o in parsed:
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        if o.key_or_group in ("stem", "trunk", "data", "train", "logger"):
            valid = options(o.key_or_group)
            bad = [v for v in values if v not in valid]
            if bad:
                raise ConfigError(f"unknown {o.key_or_group} {', '.join(map(repr, bad))}; choose one of: {', '.join(valid)}.")
            choices[o.key_or_group] = values
    for o in parsed:
        key = o.key_or_group
        if key.startswith("stem.") and not o.is_add() and not o.is_delete():
            param = key.split(".")[1]
            for name in choices.get("stem", [default_choice("stem")]):
                valid = [*STEM_KEYS[1:], *stems.spec(name).defaults]
                if param not in valid:
                    raise ConfigError(f"stem {name!r} has no parameter {param!r}; its parameters are: {', '.join(valid)}.")


def to_dict(cfg) -> dict:
    """The resolved config as plain Python (for the record and W&B)."""
    return OmegaConf.to_container(cfg, resolve=True)
