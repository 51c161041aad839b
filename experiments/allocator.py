"""glibc's malloc told to keep freed memory in a CPU run's process, so that a step reuses the last step's memory.

Why: glibc hands every freed block above its mmap threshold (adjusted on the fly, 32 MiB at most) back to the kernel,
so a CPU training step's large activations and temporaries are mapped and zeroed afresh, in a number of page faults
that changes from step to step (0 to 12,000 a stem step at 64 px, benchmarks/match_time.py). That made one stem's
step time bimodal and `stem.match=time:` refuse or miss on a quiet machine. Raising both thresholds keeps freed memory
for reuse, as PyTorch's CUDA caching allocator does on a GPU; torch has no such allocator for the CPU, and
`mallopt` is glibc's documented switch (`man 3 mallopt`), so it is called here through ctypes. Measured: the same
peak RSS, no training speed-up outside the noise, and time matches that land (benchmarks/RESULTS.md)."""
from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap and are reused once freed
TRIM_THRESHOLD = (1 << 31) - 1  # free memory at the heap's top is kept up to 2 GiB (mallopt takes an int)
OFF = "STEMLAB_KEEP_FREED_MEMORY"  # =0: leave glibc's defaults (an A/B against them)
GLIBC_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
KEPT = "glibc, freed memory kept (mmap threshold 1 GiB, trim threshold 2 GiB)"

_done: str | None = None


def keep_freed_memory(device_type: str = "cpu") -> str | None:
    """For a process that computes on the CPU (`device_type`, torch.device.type): keep freed memory (once; a later call
    returns the same), unless the environment already chose an allocator or its settings, or asks for glibc's
    defaults. Returns what the process's allocator does, for the record; None on another device (a GPU's memory has
    its caching allocator, and the host's is left as it is)."""
    global _done
    if device_type != "cpu":
        return None
    if _done is None:
        _done = _decide()
    return _done


def _decide() -> str:
    if os.environ.get(OFF) == "0":
        return f"glibc defaults ({OFF}=0)"
    chosen = [f"{k}={os.environ[k]}" for k in GLIBC_MALLOC_ENV if k in os.environ]
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        chosen.append(f"GLIBC_TUNABLES={os.environ['GLIBC_TUNABLES']}")
    preloaded = [lib for lib in os.environ.get("LD_PRELOAD", "").split() if "malloc" in lib]
    if chosen or preloaded:
        return f"as the environment set it ({', '.join(chosen + [f'LD_PRELOAD {lib}' for lib in preloaded])})"
    if platform.libc_ver()[0] != "glibc":
        return f"the C library's defaults (not glibc: {platform.libc_ver()[0] or platform.system()})"
    libc = ctypes.CDLL("libc.so.6")
    if libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return "glibc defaults (mallopt refused the thresholds)"
    return KEPT
