"""The worker threads that draw large tensors' noise in parallel chunks.

On CPU, ``normal_`` with a seeded generator is a serial pass whatever torch's thread count, and a dense ZO step makes
three such passes over every trainable element: they dominate the step's time outside the forwards. A large tensor's
noise is therefore defined chunk by chunk (:func:`~zolightning.functional.noise.fill_noise_`), each chunk from its
own generator, so the chunks can be drawn on several threads with bitwise the same result as on one. torch releases
the GIL inside the op.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_workers = min(8, os.cpu_count() or 1)


def noise_workers() -> int:
    """How many threads draw noise chunks (1: everything on the calling thread)."""
    return _workers


def set_noise_workers(workers: int) -> None:
    """Set the number of noise threads (default ``min(8, cores)``; 1 draws everything on the calling thread).

    The noise itself does not depend on it: only how fast it is drawn.
    """
    global _pool, _workers
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"`workers` must be an integer >= 1, got {workers!r}.")
    with _lock:
        if _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None
        _workers = workers


def noise_executor() -> ThreadPoolExecutor | None:
    """The shared pool, or ``None`` when there is a single worker."""
    global _pool
    if _workers == 1:
        return None
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_workers, thread_name_prefix="zo-noise")
        return _pool
