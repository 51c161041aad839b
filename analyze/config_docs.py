"""``python -m analyze config-docs [--write FILE | --check FILE]``: the configuration reference, generated from the
structured configs of experiments/schema.py (each key's type, default, accepted values and the comment beside it)
and the defaults list of conf/config.yaml, so that the docs never describe a key the schema does not have.

The block between <!-- config:start --> and <!-- config:end --> of FILE (docs/configuration.md) is replaced;
--check exits 1 when it is stale (a test runs it)."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing
from pathlib import Path
from typing import Any

from .report.readme import add_block_parser, write_or_check_block

START, END = "<!-- config:start -->", "<!-- config:end -->"
COMMAND = "python -m analyze config-docs --write docs/configuration.md"
FIELD = re.compile(r"(\w+)\s*:\s*[\w\[\], .]+=")  # `name: type = ...` in a dataclass body


def comments(cls: type) -> dict[str, str]:
    """{field: the comment lines just above it and the comment at the end of its line} from the class's source."""
    found, pending = {}, []
    for line in inspect.getsourcelines(cls)[0][1:]:
        text = line.strip()
        if text.startswith("#"):
            pending.append(text[1:].strip())
            continue
        match = FIELD.match(text)
        if match:
            trailing = text.split("  # ", 1)[1] if "  # " in text else ""
            found[match.group(1)] = " ".join([*pending, trailing]).strip()
        pending = []
    return found


def type_text(annotation: Any) -> str:
    """int, float, str, bool, list[int], any, or `<type> | null`."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union and type(None) in args:
        return type_text(next(a for a in args if a is not type(None))) + " | null"
    if typing.get_origin(annotation) is list:
        return f"list[{type_text(args[0])}]"
    return "any" if annotation is Any else annotation.__name__


def value_text(value: Any) -> str:
    if value is dataclasses.MISSING or value == "???":
        return "(required)"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def key_rows(cls: type, own_only: bool = False, values: dict[str, Any] | None = None) -> list[list[str]]:
    """One row per key of dataclass `cls` (not `name`, the option's; `own_only`: not its base class's keys either):
    key, type, default, accepted values, meaning."""
    notes = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base):
            notes.update(comments(base))
    skip = {"name", *(f.name for f in dataclasses.fields(cls.__mro__[1]))} if own_only else {"name"}
    rows = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if values and f.name in values:
            default = values[f.name]
        rule = f.metadata.get("rule")
        rows.append([f"`{f.name}`", type_text(f.type), f"`{value_text(default)}`", rule.text if rule else "",
                     notes.get(f.name, "")])
    return rows


def table(rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    out = ["| key | type | default | accepts | meaning |", "|---|---|---|---|---|"]
    escaped = [[cell.replace("|", "\\|").replace("<", "&lt;") for cell in row] for row in rows]  # markdown, not HTML
    return out + ["| " + " | ".join(row) + " |" for row in escaped] + [""]


def block(root: Path = Path(".")) -> str:
    import yaml

    from experiments import schema

    config = yaml.safe_load((root / "conf" / "config.yaml").read_text(encoding="utf-8"))
    defaults = {k: v for entry in config["defaults"] if isinstance(entry, dict) for k, v in entry.items()}
    out = [f"Defaults (`conf/config.yaml`): " + ", ".join(f"`{k}={v}`" for k, v in defaults.items()) + ".", ""]
    out += ["### `stem`", "", "Every registered stem is an option (its own parameters: [Stems](stems.md)); every stem "
            "node also has:", "", *table(key_rows(schema.StemConf))]
    out += ["### `trunk`", "", schema.TrunkConf.__doc__, "",
            "Options: " + ", ".join(f"`{t.name}` (layers {t.layers}, expansion {t.expansion})" for t in schema.TRUNKS) + ".",
            "", *table(key_rows(schema.TrunkConf))]
    out += ["### `data`", "", schema.DataConf.__doc__, "", *table(key_rows(schema.DataConf))]
    for data in schema.DATASETS:
        out += [f"`data={value_text(data.name)}`: {data.__doc__}", "", *table(key_rows(data, own_only=True))]
    out += ["### `train`", "", schema.TrainConf.__doc__, "", *table(key_rows(schema.TrainConf))]
    out += ["### `logger`", "", schema.LoggerConf.__doc__, "", *table(key_rows(schema.LoggerConf)),
            f"`logger=wandb`: {schema.WandbConf.__doc__}", "", *table(key_rows(schema.WandbConf, own_only=True))]
    out += ["### `profile`", "", schema.ProfileConf.__doc__, "", *table(key_rows(schema.ProfileConf, values=config["profile"]))]
    out += ["### `compare`", "", schema.CompareConf.__doc__, "", *table(key_rows(schema.CompareConf))]
    top = [row for row in key_rows(schema.Config, values=config) if row[0] in ("`seed`", "`study`")]
    out += ["### top level", "", *table(top), f"Generated from `experiments/schema.py` by `{COMMAND}`."]
    return "\n".join(out)


def add_config_docs_parser(sub: Any) -> None:
    add_block_parser(sub, "config-docs", "the configuration reference, from experiments/schema.py", __doc__, run_config_docs)


def run_config_docs(args: argparse.Namespace) -> int:
    return write_or_check_block(args, block(), START, END, "configuration reference", COMMAND)
