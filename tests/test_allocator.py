"""experiments.allocator: a CPU run's process keeps freed memory for reuse (checked by page faults, never by time)."""
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.allocator import KEPT

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's; this C library is not glibc")

# a fresh process allocates and fills a 64 MiB block 25 times, freeing it each time, and prints what the allocator
# does and the minor page faults of one allocation of the last five: 64 MiB is above glibc's largest dynamic mmap threshold (32 MiB),
# so by default each block is mapped anew and every page of it faults again (16,384 pages of 4 KiB; 32 of 2 MiB
# where transparent huge pages back it); kept, the freed block is reused and nothing faults
PROBE = """
import resource, torch
from experiments.allocator import keep_freed_memory
print(keep_freed_memory())
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # the heap settles: a freed block next to newer small ones is too small for an aligned request
    # of its own size until neighbours coalesce with it (8 rounds here), so the first blocks are fresh memory
    torch.empty(64 << 20, dtype=torch.uint8).fill_(1)
before = faults()
for _ in range(5):
    torch.empty(64 << 20, dtype=torch.uint8).fill_(1)
print((faults() - before) // 5)
"""
ALLOCATOR_ENV = ("STEMLAB_KEEP_FREED_MEMORY", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                 "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES", "LD_PRELOAD")


def probe(**env) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    done = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    said, faults = done.stdout.splitlines()
    return said, int(faults)


def test_freed_memory_is_reused_and_glibc_defaults_map_it_anew():
    said, kept = probe()
    assert said == KEPT
    said, default = probe(STEMLAB_KEEP_FREED_MEMORY="0")
    assert said == "glibc defaults (STEMLAB_KEEP_FREED_MEMORY=0)"
    assert default >= 32 and kept * 10 <= default, (kept, default)


def test_the_environment_s_own_allocator_setting_wins():
    said, _ = probe(MALLOC_TRIM_THRESHOLD_="131072")
    assert said == "as the environment set it (MALLOC_TRIM_THRESHOLD_=131072)"


def test_a_gpu_process_keeps_its_host_allocator_as_it_is():
    from experiments.allocator import keep_freed_memory

    assert keep_freed_memory("cuda") is None  # the record's hardware.allocator of a GPU run
