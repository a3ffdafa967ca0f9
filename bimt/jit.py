"""Compiled loops: numba's `njit` where numba imports, the plain Python function where it does not.

numba is a dependency; the fallback keeps `import bimt` (and the eager engine) working on a machine
where it is broken. Compiled functions are cached on disk, so only the first run compiles them.
"""

from __future__ import annotations

from collections.abc import Callable

try:
    import numba
except ImportError:
    numba = None


def available() -> bool:
    """Whether loops are compiled (the native engine needs that; relocation works either way)."""
    return numba is not None


def jit(fastmath: set[str] | bool = False) -> Callable[[Callable], Callable]:
    def decorate(function: Callable) -> Callable:
        return numba.njit(cache=True, fastmath=fastmath, nogil=True)(function) if numba is not None else function

    return decorate
