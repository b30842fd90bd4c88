"""The worker threads that draw large tensors' noise in parallel chunks (the step's side of it: layer 1 only defines
the chunks, and draws them on whatever executor it is lent).

On CPU, ``normal_`` with a seeded generator is a serial pass whatever torch's thread count, and a dense ZO step makes
three such passes over every trainable element: they dominate the step's time outside the forwards. A large tensor's
noise is therefore defined chunk by chunk (:func:`~zolightning.functional.noise.fill_noise_`), each chunk from its
own generator, so the chunks can be drawn on several threads with bitwise the same result as on one. torch releases
the GIL inside the op. :func:`drawing_noise` lends the pool to the noise drawn inside a block: the engine's
``measure`` and every update's ``apply`` run in one. The fused counter-noise kernels (``zo.noise: counter``) take their
chunks on the same pool (numba's own threading layer is not used: its OpenMP workers spin between calls, and took
about 40% of a core from the forwards of the process that called them).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from zolightning.functional.chunk_executor import chunks_drawn_on


_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_workers: int | None = None  # None: follow `default_noise_workers()` (torch's threads may change after import)
MAX_WORKERS = 8


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the system tells, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_noise_workers(cores: int | None = None) -> int:
    """One noise thread per usable core, at most :data:`MAX_WORKERS` (the calling thread is one of them).

    Measured on 2 cores with torch's 2 threads (OPT-125m-shaped dense step, 8 × 32 tokens): 2 noise threads give
    2.65 s a step, 1 gives 2.96 s. torch's threads are idle while noise is drawn between forwards, so sharing the
    cores with them costs less than drawing serially (``benchmarks/README.md``).

    Args:
        cores: usable cores (default :func:`usable_cores`).
    """
    cores = usable_cores() if cores is None else cores
    return max(1, min(MAX_WORKERS, cores))


def noise_workers() -> int:
    """How many threads draw noise chunks (1: everything on the calling thread): the number set with
    :func:`set_noise_workers`, else :func:`default_noise_workers` as torch is configured now."""
    return _workers if _workers is not None else default_noise_workers()


def set_noise_workers(workers: int | None) -> None:
    """Set the number of noise threads (1 draws everything on the calling thread); ``None`` returns to the default,
    :func:`default_noise_workers`.

    The noise itself does not depend on it: only how fast it is drawn.
    """
    global _pool, _workers
    if workers is not None and not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"`workers` must be an integer >= 1 or None (the default), got {workers!r}.")
    with _lock:
        if _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None
        _workers = workers


def noise_executor() -> ThreadPoolExecutor | None:
    """The shared pool, or ``None`` when there is a single worker."""
    global _pool
    workers = noise_workers()
    if workers == 1:
        return None
    with _lock:
        if _pool is None or _pool._max_workers != workers:
            if _pool is not None:
                _pool.shutdown(wait=True)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zo-noise")
        return _pool


@contextmanager
def drawing_noise() -> Iterator[None]:
    """Draw the noise of the block on the shared pool (:func:`noise_executor`; the calling thread alone with one
    worker): the chunks of torch noise and those of the fused counter-noise kernels alike."""
    with chunks_drawn_on(noise_executor()):
        yield
