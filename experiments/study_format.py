"""One format per study: every CPU run of a sweep trains in one precision, one memory format and one thread count.

Precision and layout are treatments (bf16 against fp32 changes what a stem learns), so a study cannot let them vary
by stem. The first point of a sweep decides them: the settings where they are explicit, else one probe of the
reference stem's model (experiments.cpu_format), and writes them to `<sweep dir>/study_format.json`. Every later
point, resumed ones included, trains in that format and with that thread count; a point whose own explicit setting
contradicts it is refused. A single run keeps its own per-machine `auto`."""
from __future__ import annotations

import fcntl
import json
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from stems.base import StemlabError, atomic_write

log = logging.getLogger("stemlab")
FILE = "study_format.json"
KEYS = {"precision": str, "channels_last": bool, "threads": int, "decided": dict}


class StudyFormatError(StemlabError):
    """A sweep point that cannot train in its study's format; the message names the file and the fix."""


def study_format(sweep_dir: Path, train_cfg: Any, decide: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The study's format from `sweep_dir`'s file, or `decide()`d and written there by the first point to ask
    (under a lock: two points of a parallel launcher starting together probe once). Sets torch's thread count to
    the study's."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / FILE
    with open(sweep_dir / f".{FILE}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            fmt = read(path)
        else:
            fmt = {**decide(), "threads": torch.get_num_threads(), "decided_at": datetime.now(timezone.utc).isoformat()}
            atomic_write(path, json.dumps(fmt, indent=2) + "\n")
            log.info("This sweep trains every point in %s with %d thread%s (%s).", label(fmt), fmt["threads"],
                     "s" * (fmt["threads"] != 1), path)
    for key in ("precision", "channels_last"):
        asked = train_cfg[key]
        if asked != "auto" and asked != fmt[key]:
            raise StudyFormatError(f"train.{key}={asked} contradicts this sweep's format ({label(fmt)}, {path}): every "
                                   f"run of a study trains in one format; drop the setting, or give the run another "
                                   f"hydra.sweep.dir.")
    if torch.get_num_threads() != fmt["threads"]:
        log.info("Training with the study's %d threads (not %d): its runs' times compare only at one thread count.",
                 fmt["threads"], torch.get_num_threads())
        torch.set_num_threads(fmt["threads"])
    return fmt


def read(path: Path) -> dict[str, Any]:
    """The study's format, or one sentence naming the damaged file (never decided again silently: points have
    trained in it)."""
    try:
        fmt = json.loads(path.read_text(encoding="utf-8"))
        bad = [k for k, kind in KEYS.items() if not isinstance(fmt.get(k), kind)] if isinstance(fmt, dict) else list(KEYS)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        bad = [type(e).__name__]
    if bad:
        raise StudyFormatError(f"{path} is damaged ({', '.join(bad)} unreadable); it holds the format every point of "
                               f"this sweep trains in: restore it, or delete it to decide again (the report refuses "
                               f"to compare runs of different formats).")
    return fmt


def label(fmt: dict[str, Any]) -> str:
    return f"{fmt['precision']}{', channels_last' if fmt['channels_last'] else ''}"
