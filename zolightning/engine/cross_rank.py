"""``CrossRank``: how one step's directions and numbers relate to the data-parallel ranks, decided once per step.

Three layouts, as parameters rather than branches of the step:

- one process (or a replay, whose numbers were combined when they were recorded): this process's directions are the
  step's, and its numbers are final;
- data parallelism: every rank perturbs along the same directions, on its own batch, and the numbers are averaged
  (one all-reduce);
- query parallelism (``zo.query_parallel``): rank r owns directions r·q … r·q + q − 1, and the numbers are gathered
  (one all-gather), so that every rank applies every rank's directions.

A micro-batch that only accumulates keeps its numbers local: they cross ranks with the update's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from torch import Tensor

from zolightning.engine import collectives


def _unchanged(numbers: Tensor) -> Tensor:
    return numbers


def _gathered(numbers: Tensor) -> Tensor:
    return collectives.gather_over_ranks(numbers).flatten(0, 1)


@dataclass(frozen=True)
class CrossRank:
    """One step's layout over ranks.

    Attributes:
        local_seeds: the directions this process evaluates.
        seeds: the directions of the combined numbers' rows (every rank's under query parallelism).
        parallel: ranks perturb along different directions (query parallelism), so only an exact restore keeps the
            replicas bitwise identical.
        combine: (local rows × k) numbers → the step's numbers: unchanged, averaged or gathered.
    """

    local_seeds: list[int]
    seeds: list[int]
    parallel: bool
    combine: Callable[[Tensor], Tensor]

    @classmethod
    def of(cls, seeds_of: Callable[[int], list[int]], world: int, rank: int, query_parallel: bool,
           recorded: bool) -> CrossRank:
        """The layout for ``world`` ranks, this process being ``rank``; ``seeds_of(r)`` names rank r's directions.
        ``recorded``: the numbers are a replay's, already combined (and ``world`` is the recorded run's)."""
        parallel = query_parallel and world > 1
        every = [seed for r in range(world) for seed in seeds_of(r)] if parallel else seeds_of(0)
        if recorded or world == 1:
            return cls(seeds_of(0), every, parallel, _unchanged)
        if parallel:
            return cls(seeds_of(rank), every, True, _gathered)
        return cls(seeds_of(0), every, False, collectives.mean_over_ranks)

    def local(self) -> CrossRank:
        """The layout of a micro-batch that only accumulates: its own directions' numbers, kept as measured."""
        return replace(self, seeds=self.local_seeds, combine=_unchanged)
