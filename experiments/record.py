"""The result record: the one module that writes and reads a run's result.json, layers.csv and history.csv.

A run directory holds a complete record when it has a result.json: the tables are written first and
result.json last, each atomically (stems.base.atomic_write). result.json is strict JSON: a missing or
non-finite number is `null`, never `NaN`/`Infinity`, so jq, JavaScript and every JSON library read it.

Reading is tolerant: a file that is not UTF-8, not JSON, or not shaped like a record (every field a reader
uses is type-checked: RECORD_FIELDS) comes back as an `Unreadable` with the reason, for the caller to name (a sweep re-runs the point, the report skips it);
nothing here raises on a bad file. Older records written with `NaN` literals are still read (docs/DESIGN.md, The record).
"""
from __future__ import annotations

import errno
import json
import math
import os
import platform
import subprocess
import traceback
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import torch

from stems.base import atomic_write

from .cpu_format import capabilities
from .rundir import free_reserve

RECORD_FORMAT = 1  # bump when result.json changes shape; readers accept older ones and name newer ones unreadable
RESULT_FILE, LAYERS_FILE, HISTORY_FILE = "result.json", "layers.csv", "history.csv"
# what a record on a full disk keeps: what ran, what happened, how far it got (a few kB at most)
ESSENTIAL = ("name", "config", "status", "stage", "error", "started", "finished", "wall_s", "epochs_run",
             "resumed_from_epoch", "metrics")


@dataclass(frozen=True)
class Unreadable:
    """A file the reader could not use, and why (one phrase; the caller names the file)."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


# ---------------------------------------------------------------------------------------------
# writing


def strict(value: Any) -> Any:
    """`value` as strict JSON stores it: NaN and ±inf become None at any depth, tuples become lists,
    numpy scalars become Python numbers, anything else JSON has no type for becomes its str."""
    if isinstance(value, Mapping):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if isinstance(value, (bool, str, type(None))):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalars
        value = value.item()
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def to_json(value: Any) -> str:
    """Strict JSON text; allow_nan=False makes any non-finite number that slipped through an error, not `NaN`."""
    return json.dumps(strict(value), indent=2, allow_nan=False)


def write_record(out_dir: Path, result: Mapping[str, Any], layers: pd.DataFrame | None = None,
                 history: pd.DataFrame | None = None) -> Path:
    """layers.csv, history.csv, then result.json, each atomically; returns result.json's path.

    On a full disk, a small result.json (ESSENTIAL fields, no tables, no traceback) that says so, in the room kept for
    it (experiments.rundir.free_reserve) or whatever is left; the OSError when even that does not fit."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for name, table in ((LAYERS_FILE, layers), (HISTORY_FILE, history)):
            if table is not None:
                atomic_write(out_dir / name, table.to_csv(index=False))
        return atomic_write(out_dir / RESULT_FILE, to_json({"format": RECORD_FORMAT, **result}))
    except OSError as e:
        if not disk_full(e):
            raise
        small = {k: result[k] for k in ESSENTIAL if k in result}
        small["incomplete"] = f"the disk was full ({e.strerror}): the tables and the other fields were not written"
        free_reserve(out_dir)  # the room the run folder's guard kept for this moment
        return atomic_write(out_dir / RESULT_FILE, to_json({"format": RECORD_FORMAT, **small}))


def disk_full(error: BaseException) -> OSError | None:
    """The no-space (or quota) OSError behind `error`, if any: torch.save and others re-raise it as another type."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


# ---------------------------------------------------------------------------------------------
# the fields runs share


def run_name(config: Mapping[str, Any]) -> str:
    """stem-trunk-data-sSEED: the run's name in W&B and in its record."""
    return "-".join(str(config[k]["name"]) for k in ("stem", "trunk", "data")) + f"-s{config['seed']}"


def failure(error: BaseException) -> dict[str, str]:
    """The fields a `failed` record adds: status, the error and its traceback."""
    return {"status": "failed", "error": f"{type(error).__name__}: {error}",
            "traceback": "".join(traceback.format_exception(error))}


def failed_record(config: Mapping[str, Any], error: BaseException, stage: str, **fields: Any) -> dict[str, Any]:
    """The record of a run of `config` that failed at `stage` before it trained (`setup`: bad input, a build or
    profile error; `job`: the job ended without a result) with `error`; `fields` add to it. A failure during
    training is recorded in the run's own record (experiments.runner)."""
    return {"name": run_name(config), "config": config, **failure(error), "stage": stage, **fields}


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Software and hardware versions, for the record (a study must be comparable years later)."""
    cuda = torch.cuda.is_available()
    caps = capabilities()  # the CPU's model and native bf16 (AVX-512 BF16, AMX): CPUs of one arch differ in speed
    env = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": _version("torchvision"),
           "fastai": _version("fastai"), "hydra": _version("hydra-core"), "platform": platform.platform(),
           "cpu": caps["cpu_model"], "cpu_arch": platform.machine(), "cpu_count": os.cpu_count(),
           "cpu_avx512_bf16": caps["avx512_bf16"], "cpu_amx_bf16": caps["amx_bf16"],
           "cuda": torch.version.cuda if cuda else None, "gpu": torch.cuda.get_device_name() if cuda else None}
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                           cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        env["git_commit"] = None
    return env


# ---------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class Each:
    """A JSON object whose every value has the type `of` (a record's metrics: numbers or null)."""

    of: Any


NUMBER, OPTIONAL = (int, float), type(None)
STATUSES = ("completed", "diverged", "failed", "interrupted")
# The type of every field a reader of the record uses (a dict: an object with these fields, each optional; a
# one-element list: a list of that type; a tuple: any of these types). Fields not named here are not checked:
# a newer writer may add some. A wrong type makes the record unreadable, so no reader meets a "metrics": "oops".
RECORD_FIELDS: dict[str, Any] = {
    "format": int, "name": str, "status": str, "stage": str, "error": str, "traceback": str,
    "config": {"stem": {"name": str}, "trunk": dict, "data": dict, "train": dict, "logger": dict, "profile": dict,
               "seed": int, "study": (str, OPTIONAL)},
    "data": dict, "environment": dict, "hardware": dict, "job": dict, "profile_totals": dict, "stem_match": (dict, OPTIONAL),
    "pairing": ({"trunk_init": str, "data_order": str}, OPTIONAL),
    "started": str, "finished": str, "resumed_from_epoch": (int, OPTIONAL), "resumed_epochs": [int],
    "metrics": Each((*NUMBER, OPTIONAL)), "epochs_run": int,
    "wall_s": (*NUMBER, OPTIONAL), "checkpoint_s": [NUMBER],
    "model": ({"weights": (str, OPTIONAL), "stem": {"name": str}, "in_channels": int, "num_classes": int,
               "image_size": int}, OPTIONAL),
}
JSON_WORDS = {dict: "an object", list: "a list", str: "text", bool: "true/false", int: "an integer", float: "a number",
              type(None): "null"}


def kind_words(kind: Any) -> str:
    """RECORD_FIELDS' notation in words: (int, float, None) -> `a number or null`."""
    if isinstance(kind, tuple):
        words = list(dict.fromkeys(kind_words(k) for k in kind if not (k is int and float in kind)))
        return ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else words[0]
    return JSON_WORDS[dict if isinstance(kind, (dict, Each)) else list if isinstance(kind, list) else kind]


def has_type(value: Any, kind: Any) -> bool:
    """Whether a JSON value has the type `kind` (RECORD_FIELDS' notation); true/false is never a number."""
    if isinstance(kind, tuple):
        return any(has_type(value, k) for k in kind)
    if isinstance(kind, (dict, Each)):
        return isinstance(value, dict)
    if isinstance(kind, list):
        return isinstance(value, list)
    return isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)


def wrong_field(value: dict, fields: dict[str, Any], prefix: str = "") -> str | None:
    """`metrics is "oops", not an object` for the first field of `value` whose type is not its field's."""
    for key, kind in fields.items():
        if key not in value:
            continue
        item, name = value[key], f"{prefix}{key}"
        if key == "status" and not prefix and item not in STATUSES:
            return f"status is {item!r}, not one of {', '.join(STATUSES)}"
        if not has_type(item, kind):
            return f"{name} is {json.dumps(item)[:40]}, not {kind_words(kind)}"
        inner = next((k for k in (kind if isinstance(kind, tuple) else (kind,)) if has_type(item, k)), None)
        if isinstance(inner, dict):
            wrong = wrong_field(item, inner, f"{name}.")
        elif isinstance(inner, Each):
            wrong = wrong_field(item, {k: inner.of for k in item}, f"{name}.")
        elif isinstance(inner, list):
            wrong = wrong_field(dict(enumerate(item)), {i: inner[0] for i in range(len(item))}, f"{name}.")
        else:
            wrong = None
        if wrong:
            return wrong
    return None


def read_record(path: Path) -> dict[str, Any] | Unreadable:
    """result.json as a dict (non-finite numbers of old records as None), or why it cannot be used."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        return Unreadable(path, f"cannot be read ({e.strerror or type(e).__name__})")
    except UnicodeDecodeError as e:
        return Unreadable(path, f"is not UTF-8 text (byte {e.start})")
    try:
        record = json.loads(text)  # Python's json accepts the NaN literals older records hold
    except json.JSONDecodeError as e:
        return Unreadable(path, f"is not JSON ({e.msg} at line {e.lineno})")
    if not isinstance(record, dict):
        return Unreadable(path, f"is not a result record (a JSON {type(record).__name__}, not an object)")
    missing = [k for k in ("config", "status") if k not in record]
    if missing:
        return Unreadable(path, f"is not a result record (no {' or '.join(missing)})")
    fmt = record.get("format", RECORD_FORMAT)  # records from before the format number have format 1's fields
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > RECORD_FORMAT:
        return Unreadable(path, f"has record format {fmt}, newer than this reader's {RECORD_FORMAT} (update stemlab)")
    wrong = wrong_field(record, RECORD_FIELDS)
    if wrong:
        return Unreadable(path, f"is not a valid result record ({wrong})")
    if "name" not in (record["config"].get("stem") or {}):
        return Unreadable(path, "is not a result record (no config.stem.name)")
    return strict(record)


def read_table(path: Path) -> pd.DataFrame | Unreadable | None:
    """A record's layers.csv or history.csv; None when the run wrote none."""
    if not path.exists():
        return None
    try:
        return pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        return Unreadable(path, f"is not a readable CSV table ({type(e).__name__})")


def metric(record: Mapping[str, Any]) -> float:
    """What a sweeper optimises: the final validation accuracy (NaN when the run has none)."""
    value = (record.get("metrics") or {}).get("valid_acc")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
