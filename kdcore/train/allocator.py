"""The C allocator of a training process: freed memory kept for the next step, handed back when a run ends.

PyTorch's CPU tensors come from the C library's malloc. glibc's malloc gives large freed blocks back to the kernel
(a block over its dynamic threshold is mmap'd and unmapped on free; the heap's free top is trimmed), so each
training step faults its activations' pages in again and the kernel zeroes them: on Fashion-MNIST's CNN at
batch 256, ~19–28k page faults and ~6–8 % of a CPU step (bench/allocator_bench.py). A process that trains keeps its
freed memory instead (`hold_freed_memory`); one that outlives its run (a worker) hands it back when the run ends
(`return_freed_memory`). Elsewhere than glibc both do nothing, and so does holding when the user has tuned the
allocator (glibc's MALLOC_* variables or tunables) or preloaded another one (jemalloc, tcmalloc).
"""
from __future__ import annotations

import ctypes
import os
import platform
from functools import cache

# mallopt(3) parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's ceiling for M_MMAP_THRESHOLD on 64-bit: blocks larger than this are always mmap'd
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
_NEVER_TRIM = 2 ** 31 - 1  # an int: mallopt takes one


@cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _user_tuned() -> bool:
    """The user chose the allocator's behaviour: their settings stand."""
    env = os.environ
    return (any(k.startswith("MALLOC_") for k in env) or "glibc.malloc" in env.get("GLIBC_TUNABLES", "")
            or bool(env.get("LD_PRELOAD", "").strip()))


def hold_freed_memory() -> bool:
    """Keep freed blocks up to 32 MB in the process's heap for reuse instead of returning them to the kernel.
    True when the allocator took the settings."""
    libc = _glibc()
    if libc is None or _user_tuned():
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))


def return_freed_memory() -> bool:
    """Hand every free page of the heap back to the kernel now (malloc_trim(0)). True when some was."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))
