"""Layer 2: gradient estimators, each one object behind :class:`Estimator`'s protocol."""

from zolightning.estimators.base import Estimator, ProbeLike
from zolightning.estimators.forward_gradient import ForwardGradient
from zolightning.estimators.fzoo import FZOO
from zolightning.estimators.one_sided import OneSided
from zolightning.estimators.registry import ESTIMATORS, create_estimator
from zolightning.estimators.two_sided import TwoSided

__all__ = [
    "ESTIMATORS",
    "Estimator",
    "FZOO",
    "ForwardGradient",
    "OneSided",
    "ProbeLike",
    "TwoSided",
    "create_estimator",
]
