"""glibc's memory allocator set up for jobs that allocate and free large arrays over and over.

A diffusion sampling step or a ResNet epoch on the CPU allocates and frees buffers of tens to
hundreds of MB (convolution workspaces, activations, gradients) many times. With glibc's
defaults much of that memory goes back to the operating system when it is freed (buffers
above the adaptive mmap threshold are unmapped, the heap's free top is trimmed) and the kernel
zeroes its pages again at the next allocation: on the 2-core demo machine a third of a
sampling job's CPU time was system time (page faults). Kept in the heap instead, freed memory
is reused by the next allocation.

:func:`keep_freed_memory` sets glibc's ``mallopt`` parameters (malloc(3), mallopt(3)): buffers
up to :data:`MMAP_THRESHOLD` come from the heap, the heap's free top is returned to the
operating system only beyond :data:`TRIM_THRESHOLD`, and the heap grows by
:data:`TOP_PAD` beyond each request. The peak resident memory stays about the same (the same
buffers, reused); memory freed at the end of a job stays with the process until it exits.
Measured on a demo sampling job (1 thread, 2.5 mm, 3 DDIM steps): 7.7-8.7 s wall and 1.6-2.5 s
of system time before, 6.7-7.0 s and 0.6 s after (README, "Quick start", has the whole demo).

Every workflow job calls it (:func:`defaceaudit.workflow.run_step`). It changes nothing when
the C library is not glibc, when ``DEFACEAUDIT_MALLOC_TUNING=0``, or when the environment
already sets any of glibc's ``MALLOC_*_`` tunables (the user's choice wins).
"""

from __future__ import annotations

import ctypes
import logging
import os

__all__ = ["MMAP_THRESHOLD", "TOP_PAD", "TRIM_THRESHOLD", "keep_freed_memory"]

log = logging.getLogger(__name__)

# mallopt parameter numbers (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

#: bytes: allocations at least this large are still mapped one by one (glibc's maximum, 32 MiB)
MMAP_THRESHOLD = 32 * 2**20
#: bytes of free memory at the top of the heap before it is returned to the operating system
TRIM_THRESHOLD = 2**30
#: bytes added to each growth of the heap (address space; pages count once touched)
TOP_PAD = 256 * 2**20
#: environment variable: ``0`` leaves the allocator at glibc's defaults
OPT_OUT = "DEFACEAUDIT_MALLOC_TUNING"
#: glibc's own environment tunables for the same parameters
GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory(environ: dict | None = None) -> bool:
    """Tune glibc's allocator for this process; returns whether it was changed.

    ``environ`` (default ``os.environ``) is read for :data:`OPT_OUT`, :data:`GLIBC_VARIABLES`
    and malloc settings in ``GLIBC_TUNABLES`` (the user's own settings win: nothing is
    changed). Returns False, changing nothing, on another C library.
    """
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT, "1") == "0":
        return False
    if any(name in environ for name in GLIBC_VARIABLES):
        return False
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return False  # the user's own malloc tunables win
    try:
        libc = ctypes.CDLL(None)  # the C library this process runs on, not one found by name
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # (setting any of them also stops glibc from adjusting the threshold on its own)
    settings = (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_TOP_PAD, TOP_PAD),
    )
    applied = all([mallopt(param, value) == 1 for param, value in settings])  # every one tried
    if not applied:
        log.debug("glibc refused a mallopt setting; allocator partly at its defaults")
    return applied
