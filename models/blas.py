"""Keep the BLAS libraries (numpy's and scipy's OpenBLAS) to a given number of threads.

The profiler's matrices are small (a 135 x 135 ridge solve, 500-row products): threads buy
nothing, and when other busy processes share the cores (a worker next to a broker and other
workers on 2 cores) OpenBLAS's spinning threads made a 0.15 ms solve take over 100 ms.
:func:`blas_threads` limits them with threadpoolctl for the duration of a block (about
50 us to enter and leave); :func:`limit_blas_threads` does it once for a whole process, as
the worker does.

>>> with blas_threads(1):
...     pass
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from threadpoolctl import ThreadpoolController

_controller: ThreadpoolController | None = None


@contextlib.contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Within the block, BLAS calls use at most ``n`` threads (None: as configured)."""
    global _controller
    if n is None:
        yield
        return
    if _controller is None:
        _controller = ThreadpoolController()  # finds the libraries loaded so far, once
    with _controller.limit(limits=n, user_api="blas"):
        yield


def limit_blas_threads(n: int) -> None:
    """From now on, BLAS calls of this process use at most ``n`` threads."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    _controller.limit(limits=n, user_api="blas")
