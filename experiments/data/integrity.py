"""Is a cache's `images.u8` still what its build wrote? Its size and per-block digests, kept in meta.json.

The file is cut into 1 MiB blocks; meta.json keeps the file's byte size and an 8-byte BLAKE2b digest of
every block (about 19 bytes of JSON per MiB: 12 KB for Imagenette's training split at 152 px). Opening a
cache always compares the size (a truncated or extended file), then re-hashes a sample of blocks: the
first, the last, and SAMPLED others drawn by a fixed seed (the same blocks on every open, so a run is
reproducible), about 18 MiB read whatever the cache's size. A cache of at most SAMPLED + 2 blocks is thus
checked whole. Damage confined to blocks outside the sample (a single flipped bit in the middle of a large
cache) is found only by the full check (`verify="full"`: every block, about a second per GB), which is
what the stored per-block digests are for; they also let the message name the damaged block.
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

BLOCK_BYTES = 1 << 20
SAMPLED = 16         # blocks drawn besides the first and the last
SAMPLE_SEED = 0
VERIFY_MODES = ("sample", "full")


def block_digest(block: bytes) -> str:
    return hashlib.blake2b(block, digest_size=8).hexdigest()


def describe(path: Path) -> dict[str, Any]:
    """What meta.json keeps about the file: its size and every block's digest (reads the whole file once)."""
    digests, block_bytes = [], BLOCK_BYTES
    with open(path, "rb") as f:
        while block := f.read(block_bytes):
            digests.append(block_digest(block))
    return {"bytes": path.stat().st_size, "block_bytes": block_bytes, "blake2b_8": digests}


def sampled_blocks(n_blocks: int) -> list[int]:
    """The blocks an ordinary open re-hashes: first, last and SAMPLED others fixed by SAMPLE_SEED (all when few)."""
    if n_blocks <= SAMPLED + 2:
        return list(range(n_blocks))
    middle = random.Random(SAMPLE_SEED).sample(range(1, n_blocks - 1), SAMPLED)
    return [0, *sorted(middle), n_blocks - 1]


def damage(path: Path, kept: dict[str, Any], verify: str = "sample") -> str | None:
    """Why `path` no longer matches what meta.json `kept` of it (a few words), or None when it matches."""
    size = path.stat().st_size
    if size != kept["bytes"]:
        return f"{path.name} is {size:,} bytes, its build wrote {kept['bytes']:,}"
    digests, block_bytes = kept["blake2b_8"], kept["block_bytes"]
    blocks = range(len(digests)) if verify == "full" else sampled_blocks(len(digests))
    with open(path, "rb") as f:
        for i in blocks:
            f.seek(i * block_bytes)
            if block_digest(f.read(block_bytes)) != digests[i]:
                return f"block {i} of {path.name} (bytes {i * block_bytes:,}..) differs from what its build wrote"
    return None
