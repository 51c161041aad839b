"""The registry's stems without torch: `stems/manifest.json` holds each stem's name, contract width and parameters
(default and type), generated from the registry and committed, so that the `stem` config group, `train.py --help`
and Hydra's shell completion are built without importing torch and fastai (seconds).

A manifest can fall behind the registry (a stem added or a default changed without regenerating it): a test fails
then (`python -m stems generate --check`), and a run refuses to start (experiments.config calls `stale`), naming the
command that regenerates it. What a run builds is always the live registry's."""
from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any

from .base import StemlabError

PATH = Path(__file__).with_name("manifest.json")
REGENERATE = "python -m stems generate"
SCALARS = {int: "int", float: "float", str: "str", bool: "bool"}


def load() -> dict[str, dict[str, Any]]:
    """{stem: {"out_channels": int, "params": {key: {"default": value, "type": type text}}}} as committed."""
    try:
        committed = json.loads(PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise StemlabError(f"{PATH} cannot be read ({type(e).__name__}); regenerate it with `{REGENERATE}`.") from None
    why = wrong_shape(committed)
    if why:
        raise StemlabError(f"{PATH} is not a stem manifest ({why}); regenerate it with `{REGENERATE}`.")
    return committed


def wrong_shape(committed: Any) -> str | None:
    """What makes `committed` other than {stem: {"out_channels": int, "params": {key: {"default", "type"}}}}."""
    if not isinstance(committed, dict):
        return f"a JSON {type(committed).__name__}, not an object of stems"
    for name, entry in committed.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("out_channels"), int) \
                or not isinstance(entry.get("params"), dict):
            return f"stem {name!r} lacks its out_channels or params"
        if not all(isinstance(p, dict) and "default" in p and isinstance(p.get("type"), str) for p in entry["params"].values()):
            return f"a parameter of stem {name!r} lacks its default or type"
    return None


def generate() -> dict[str, dict[str, Any]]:
    """The manifest of the live registry (imports every stem family: torch, fastai)."""
    from . import available, spec

    manifest = {}
    for name in available():
        s = spec(name)
        hints = typing.get_type_hints(s.factory)
        manifest[name] = {"out_channels": s.out_channels,
                          "params": {k: {"default": v, "type": type_text(hints.get(k), v)} for k, v in s.defaults.items()}}
    return manifest


def render(manifest: dict[str, dict[str, Any]]) -> str:
    """The file's text: one line per stem, its parameters in the factory's order (the order --help lists them in)."""
    lines = [f"{json.dumps(name)}: {json.dumps(entry)}" for name, entry in manifest.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def stale() -> str | None:
    """None when the committed manifest describes the live registry, else one sentence naming the first stem that
    differs and the command that regenerates the manifest."""
    try:
        committed = load()
    except StemlabError as e:
        return str(e)
    live = generate()
    if render(committed) == render(live):  # text: the parameters' order counts too
        return None
    differs = next(n for n in sorted(set(live) | set(committed)) if json.dumps(live.get(n)) != json.dumps(committed.get(n)))
    what = ("is missing" if differs not in committed else "is no longer registered" if differs not in live
            else "has other parameters or defaults than its registration")
    return f"stem {differs!r} {what} in {PATH.name}, the registry's torch-free manifest; regenerate it with `{REGENERATE}`."


def type_text(annotation: Any, default: Any) -> str:
    """A parameter's type as the config can hold it: int, float, str, bool, list[<scalar>] (tuples become lists, as
    the registry's defaults do), `<type> | None`, or any; from its annotation, else from its default's type."""
    if annotation is None:  # not annotated
        return SCALARS.get(type(default), "any")
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (tuple, list) and args and args[0] in SCALARS:
        return f"list[{SCALARS[args[0]]}]"
    if origin in (typing.Union, types.UnionType) and type(None) in args and len(args) == 2:
        inner = type_text(next(a for a in args if a is not type(None)), default)
        return "any" if inner == "any" else f"{inner} | None"
    return SCALARS.get(annotation, "any")
