"""One BLAS thread while bifnet computes.

bifnet's dense linear algebra is small: 6 x 6 node Jacobians, shooting and
collocation blocks of about 100 x 100, full-network matrices up to 576 x 576.
Its parallelism is at the level of tasks (branches on threads, modes and
sweep points on processes). OpenBLAS's own threads at these sizes cost far
more than they gain, and on a loaded machine they are ruinous: their idle
workers spin and take the cores from the task threads. Measured on the 2
shared cores of our machines with another process busy: the SVD of a 97 x 97
shooting matrix (the fold-of-cycles border) took 0.23 s with OpenBLAS's
default threads and 0.003 s with one; ``eigvals`` of a 136 x 136 matrix
1.95 s against 0.008 s (see ``docs/engine.md``).

:func:`single_threaded_blas` sets every loaded OpenBLAS (numpy's and scipy's
wheels bundle one each) to one thread, and restores the counts when the last
of any nested or concurrent users leaves; it is a no-op for other BLAS builds.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading

_lock = threading.Lock()
_users = 0
_saved: list = []


@functools.lru_cache(maxsize=None)
def _openblas_thread_controls():
    """``[(get, set), ...]`` of every loaded OpenBLAS (numpy's and scipy's wheels bundle one each)."""
    import numpy  # noqa: F401  (loads numpy's BLAS)
    import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's BLAS)

    controls = []
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:  # not Linux: leave the BLAS alone
        return controls
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in (("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
                                   ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                                   ("openblas_get_num_threads", "openblas_set_num_threads"),
                                   ("openblas_get_num_threads64_", "openblas_set_num_threads64_")):
            get = getattr(lib, get_name, None)
            set_ = getattr(lib, set_name, None)
            if get is not None and set_ is not None:
                get.restype = ctypes.c_int
                set_.argtypes = [ctypes.c_int]
                controls.append((get, set_))
                break
    return controls


@contextlib.contextmanager
def single_threaded_blas():
    """Every loaded OpenBLAS on one thread inside the block.

    Nested and concurrent blocks (branches on threads) share one setting: the
    thread counts are saved by the first block to enter and restored by the
    last to leave, as OpenBLAS's setting is global to the process.

    Examples
    --------
    >>> import numpy as np
    >>> with single_threaded_blas():
    ...     values = np.linalg.eigvals(np.eye(3))
    """
    global _users
    with _lock:
        if _users == 0:
            controls = _openblas_thread_controls()
            _saved[:] = [(set_, int(get())) for get, set_ in controls]
            for set_, _ in _saved:
                set_(1)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                for set_, value in _saved:
                    set_(value)
                _saved.clear()


def one_blas_thread_in_this_process() -> None:
    """Every loaded OpenBLAS on one thread for good (start-up of a pool worker: the tasks are
    the parallelism)."""
    for _, set_ in _openblas_thread_controls():
        set_(1)


def blas_threads() -> list[int]:
    """The thread count of every loaded OpenBLAS (the tests check it)."""
    return [int(get()) for get, _ in _openblas_thread_controls()]
