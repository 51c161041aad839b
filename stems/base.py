"""What every layer of stemlab shares: the error users see, how an exception is quoted, atomic file writes, and
quiet imports of fastai.

They live in the bottom layer (stems) so that the profiler, experiments, the report and the entry points
can all import them without an edge pointing upwards (docs/DESIGN.md, Layers)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable


class StemlabError(ValueError):
    """Bad input or an unmet requirement. Its message is the one sentence the user sees: it names the
    problem and the fix. Entry points print it without a traceback and exit with status 2."""


def first_line(error: BaseException, fallback: str = "") -> str:
    """The first line of an exception's message (libraries append dumps and tracebacks below it); `fallback` when
    the message is empty."""
    text = str(error).strip()
    return text.splitlines()[0] if text else fallback


def error_line(error: BaseException, fallback: str = "") -> str:
    """`TypeName: first line of the message`, the form a record and a one-sentence error quote an exception in."""
    return f"{type(error).__name__}: {first_line(error, fallback)}"


def output_folder(path: Path, flag: str = "--out") -> Path:
    """`path` as a folder to write into, created with its parents when missing; one sentence when it cannot be."""
    if path.exists() and not path.is_dir():
        raise StemlabError(f"{flag} {path} is a file; give a folder (it is created when missing).")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StemlabError(f"{flag} {path}: the folder cannot be created ({e.strerror or type(e).__name__}: "
                           f"{e.filename}); give a folder you can write to.") from None
    return path


def replace_between(text: str, start: str, end: str, new: str, path: str, what: str) -> str:
    """`text` with the part between the marker lines `start` and `end` replaced by `new` (a generated block of a
    file such as the README: `what` it holds names it in the one-sentence error when the markers are not there)."""
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise StemlabError(f"{path} needs one {start} line followed by one {end} line around the {what}; add them.")
    before, rest = text.split(start)
    _, after = rest.split(end)
    return f"{before}{start}\n{new}\n{end}{after}"


def atomic_write(path: Path | str, content: str | bytes | Callable[[Path], None]) -> Path:
    """Write `path` so that it either holds the complete new content or is left as it was.

    `content` is text, bytes, or a function that writes a given temporary path (a figure's savefig,
    torch.save). The temporary file sits beside `path` (same file system, so the rename is atomic) and
    is removed when writing fails (a full disk leaves no stray file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(content, str):
            tmp.write_text(content, encoding="utf-8")
        elif isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            content(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def quiet_fastai_import() -> None:
    """Hide the one warning importing fastai.layers prints: it compiles two activation helpers with torch.jit.script,
    which torch deprecates with a FutureWarning (fastai's, not ours, printed at the start of every command). Called
    before the first import of fastai, wherever it happens (stems.resblock, the experiments package)."""
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
