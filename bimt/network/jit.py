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
    """numba's `njit`, cached on disk. With numpy's error model a division by zero gives inf or NaN,
    as in numpy, instead of raising: Python's model tests every divisor, which keeps LLVM from
    vectorising any loop that divides."""

    def decorate(function: Callable) -> Callable:
        if numba is None:
            return function
        return numba.njit(cache=True, fastmath=fastmath, nogil=True, error_model="numpy")(function)

    return decorate
