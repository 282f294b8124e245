"""The C allocator of a process that runs rounds (``execution.malloc``).

Every round frees and allocates the same tens of megabytes again: each client's delta and
payload, the server's stack, the mean, the scores. With glibc's defaults that memory goes back to
the system between rounds (the top of the heap is trimmed once 128 KB of it is free, and blocks
over the adaptive mmap threshold are mapped and unmapped one by one), so every round pays its page
faults again: on W2's 2NN MLP (100 clients of 199,210 parameters a round) about 70 of the server's
110 ms. :func:`retain` sets the two thresholds once for the process: blocks under 32 MB (glibc's
largest threshold on 64-bit) come from the heap, and a heap is trimmed only when more than
``TRIM_THRESHOLD`` of it is free, so the next round reuses the pages this round freed.
:func:`release` hands the free heap back (``malloc_trim``) when a run ends.

Other C libraries (musl, macOS) are left as they are: :func:`retain` returns False there. Only the
process that runs the rounds sets it (the coordinator, whose threads also train under the threads,
cohort and auto executors); Dask's worker processes keep the settings Dask's nanny gives them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
import threading

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20
"""glibc's largest mmap threshold on 64-bit (``HEAP_MAX_SIZE / 2``); larger values are refused."""
TRIM_THRESHOLD = 512 * 2**20

_lock = threading.Lock()
_state: dict[str, bool] = {}


@functools.cache
def _glibc():
    """glibc, loaded once, with ``mallopt`` and ``malloc_trim`` declared; None elsewhere."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def retain() -> bool:
    """Keep freed memory in the process for the next round (glibc only; once per process,
    idempotent). Returns whether both thresholds are set. The setting lasts as long as the process:
    a later run with ``execution.malloc: default`` in the same process finds it set."""
    with _lock:
        if "retained" not in _state:
            libc = _glibc()
            ok = libc is not None and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
            ok = ok and bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))  # the one that changes speed last
            _state["retained"] = ok
        return _state["retained"]


def retained() -> bool:
    """Whether :func:`retain` set the thresholds in this process."""
    return _state.get("retained", False)


def release() -> bool:
    """Return the heaps' free memory to the system now (glibc's ``malloc_trim(0)``); False
    elsewhere or when nothing was returned."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))
