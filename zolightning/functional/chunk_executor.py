"""The executor a block of code lends to the noise of large CPU tensors, chunk by chunk.

Both noise sources cut a large tensor into chunks that can be computed on several threads with bitwise the same result
as on one: ``torch`` noise draws each chunk from its own generator, and counter noise computes every element from its
own index. This layer owns no thread: the engine's noise workers (``zolightning.engine.noise_workers``) lend theirs
to the block they run, through :func:`chunks_drawn_on`.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from contextvars import ContextVar

_CHUNK_EXECUTOR: ContextVar[Executor | None] = ContextVar("zolightning_chunk_executor", default=None)


@contextmanager
def chunks_drawn_on(executor: Executor | None) -> Iterator[None]:
    """Draw the chunks of large CPU tensors on ``executor`` inside the block (``None``: on the calling thread).

    The noise does not depend on it, only how fast it is drawn."""
    token = _CHUNK_EXECUTOR.set(executor)
    try:
        yield
    finally:
        _CHUNK_EXECUTOR.reset(token)


def chunk_executor() -> Executor | None:
    """The executor lent by the enclosing :func:`chunks_drawn_on` block, or ``None`` outside one."""
    return _CHUNK_EXECUTOR.get()
