"""Keep the memory a CPU process frees, instead of handing it back to the kernel every step.

A training step or a forward pass allocates and frees the same large activations again and again.
glibc's ``malloc`` serves each block above ``M_MMAP_THRESHOLD`` (128 KiB at first, raised
dynamically up to 32 MiB) with a fresh ``mmap`` and returns it with ``munmap`` when PyTorch frees
it, and it gives the top of the heap back to the kernel once more than ``M_TRIM_THRESHOLD`` is free
there. Each step then touches its activations' pages for the first time again: a page fault per
4 KiB page, expensive inside a virtual machine (the host backs the page anew). PyTorch's CPU
allocator has no cache of its own, so the only place to keep that memory is the C allocator.

:func:`keep_freed_memory` sets, through ``mallopt``:

- ``M_MMAP_THRESHOLD`` = 32 MiB (glibc's maximum): blocks up to 32 MiB come from the heap, and
  setting it turns off the dynamic threshold;
- ``M_TRIM_THRESHOLD`` = 1 GiB: freed memory stays in the process unless a whole GiB is free at the
  heap's top;
- ``M_TOP_PAD`` = 64 MiB: the heap grows in large steps.

The process keeps its peak heap for its lifetime (what a training or detection job reuses at every
step anyway). Measured on 2 cores of this project's CI machine (a Firecracker VM; docs/ablations.md,
docs/inference.md): the demo's training step ~1.1× faster (page faults per step 2000–3700 → ~1100,
then ~0), the paper-size detector's bf16 forward ~1.2× faster. Blocks above 32 MiB still come from
``mmap``.

The ``bmvit`` command line calls it once at start (all verbs); a program using bmvit as a library
may call it itself. ``BMVIT_KEEP_FREED_MEMORY=0`` in the environment turns it off. Only glibc has
these settings: elsewhere (macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import os

from bmvit.errors import ConfigError

# mallopt parameter numbers (glibc <malloc.h>)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 64 << 20}
ENV = "BMVIT_KEEP_FREED_MEMORY"


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only (musl has a mallopt that does nothing)
        libc.mallopt
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Apply the settings above to this process; returns whether they are in effect (False when
    turned off by ``BMVIT_KEEP_FREED_MEMORY=0`` or when the C library is not glibc). Another value
    than 0/1 (or false/true, no/yes, off/on) is a :class:`~bmvit.errors.ConfigError` naming the variable."""
    value = os.environ.get(ENV, "1").strip().lower()
    if value not in ("0", "false", "no", "off", "1", "true", "yes", "on"):
        raise ConfigError(f"environment variable {ENV}={os.environ[ENV]!r}: expected 0 or 1")
    if value in ("0", "false", "no", "off"):
        return False
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return all(libc.mallopt(param, value) == 1 for param, value in SETTINGS.items())
