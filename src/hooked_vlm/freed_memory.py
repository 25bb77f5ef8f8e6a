"""Freed CPU memory kept for reuse, so a cache of activations does not page-fault every call.

``run_with_cache`` keeps every tensor it is asked for: on the medium LLaVA, caching every hook
holds ~800 MB. glibc's malloc returns freed memory at the top of its heap to the kernel once
more than a (dynamic, tens of MB) threshold is free, so when the previous call's cache is
dropped its pages go back, and the next call's cache takes fresh pages that the kernel must
fault in and zero: on a 2-core CPU that cost more than the eager recomputation of every
attention pattern (every hook: 1.60x the HF SDPA forward with glibc's defaults, 1.28x with
freed memory kept; `benchmarks/overhead.py`). PyTorch's CUDA allocator keeps freed blocks for
the same reason; its CPU allocator is plain ``malloc``.

:func:`keep_freed_memory` sets two glibc ``mallopt`` parameters for the process: blocks under
32 MiB come from the heap (``M_MMAP_THRESHOLD``), and up to ``limit`` bytes of free heap stay
mapped (``M_TRIM_THRESHOLD``). Larger blocks are mapped and unmapped as before, so at most
``limit`` more resident memory is kept than without it. ``HookedVLM`` calls it when it builds
a model on the CPU; set ``HOOKED_VLM_KEEP_FREED_MEMORY=0`` before that to leave malloc as it is.
Elsewhere than glibc (macOS, musl) it does nothing. Written by hand: neither PyTorch nor a
maintained package exposes these two knobs (PyTorch documents the environment variables and
``LD_PRELOAD``-ed allocators, which must be set before the process starts).

Example:
    >>> keep_freed_memory()           # HookedVLM.from_pretrained(..., device="cpu") does it
    True
"""

from __future__ import annotations

import ctypes
import os
import sys

ENV = "HOOKED_VLM_KEEP_FREED_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_MMAP_THRESHOLD = 32 << 20  # glibc's largest dynamic threshold on 64-bit
_done: list[int] = []


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Keep up to ``limit`` bytes of freed heap memory mapped for reuse (glibc only; see the
    module docstring). Returns whether malloc was changed by this call or an earlier one;
    False where ``HOOKED_VLM_KEEP_FREED_MEMORY=0`` or the C library is not glibc."""
    if _done:
        return True
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    process = ctypes.CDLL(None)  # the C library this process already runs on
    if not hasattr(process, "gnu_get_libc_version") or not hasattr(process, "mallopt"):
        return False  # not glibc (musl has no mallopt parameters of these numbers)
    mallopt = process.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not (mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, limit)):
        return False
    _done.append(limit)
    return True
