"""Named points of the stem design space: a sampled stem worth keeping, registered under its own name from a YAML
file of stems/points/ (python -m analyze space exports them). stems/__init__.py loads the installed files after the
families, when the registry is first used."""
from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any, get_type_hints

import yaml
from torch import nn

from .registry import StemError, build, register
from .space import itself, space

POINTS_DIR = Path(__file__).with_name("points")  # named points (python -m analyze space exports them): stems by name


def register_point(name: str, params: dict[str, Any], source: str) -> None:
    """Register stem `name`: the `space` stem whose defaults are `params` (so `stem=name` runs that point, and its
    parameters stay overridable like any stem's). The point is checked here: a bad one never reaches a run."""
    sig = inspect.signature(space)
    unknown = sorted(set(params) - set(sig.parameters))
    if unknown:
        raise StemError(f"stem point {name!r} has unknown parameters {', '.join(unknown)}; "
                        f"the space's are: {', '.join(list(sig.parameters)[2:])}.")

    def point(in_channels: int, out_channels: int, **kw: Any) -> nn.Module:
        return space(in_channels, out_channels, **kw)

    point.__signature__ = sig.replace(parameters=[p.replace(default=params.get(p.name, p.default))
                                                  for p in sig.parameters.values()])
    point.__annotations__ = get_type_hints(space)  # resolved: the config schema types the parameters from these
    register(name, family="space", source=source, point=itself)(point)
    try:
        build(name, 3)  # the contract's dry forward
    except StemError as e:
        raise StemError(f"stem point {name!r} is not a valid point: {str(e).split(': ', 1)[-1]}") from None


def load_points(path: Path) -> list[str]:
    """Register every point of a YAML file {name: {params: {...}, source: "..."}}; returns their names."""
    try:
        entries = yaml.safe_load(path.read_text())
        named = [(str(n), dict(e["params"]), str(e.get("source", f"a named point of the stem space ({path.name})")))
                 for n, e in entries.items()]
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError) as e:
        raise StemError(f"{path} is not a stem points file ({type(e).__name__}); each entry needs "
                        "<name>: {params: {...}, source: ...} (python -m analyze space writes one).") from None
    for name, params, source in named:
        register_point(name, params, source)
    return [n for n, _, _ in named]


def load_installed_points(folder: Path = POINTS_DIR) -> None:
    """Register the points files in stems/points/; a bad one is named in a warning and skipped (its stems are then
    unknown names, refused as such), so that one broken file never stops every command at import."""
    for path in sorted(folder.glob("*.yaml")):
        try:
            load_points(path)
        except StemError as e:
            warnings.warn(f"{e} Its stems are not registered.", stacklevel=2)
