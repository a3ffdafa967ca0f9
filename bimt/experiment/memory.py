"""Keep freed memory in the process, so that batched steps do not page-fault on every step.

A batched eager step allocates and frees temporaries of a few MB. With glibc's default settings,
allocations that large are mmapped and returned to the system when freed, and the next step faults
the pages in again (measured at K = 150 replicas: see scripts/bench.py). Raising the mmap and trim
thresholds (`mallopt`, which takes effect at once, unlike the MALLOC_* environment variables that
must be set before the process starts) lets the allocator reuse the same memory instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters
KEEP = 256 * 1024 * 1024  # bytes: far above any temporary of a batched step, far below the machine


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to serve large blocks from the heap and keep freed memory; False where the C
    library is not glibc (other allocators have other policies, and nothing is changed)."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return all(mallopt(option, KEEP) == 1 for option in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_TOP_PAD))
