"""Layer 4: zeroth-order optimizers with the ``torch.optim`` interface: the second call of a step (``apply``), and
``step(closure)`` = ``apply(engine.measure(closure))``; ``GradientUpdate`` applies a measurement through any
``torch.optim`` optimizer."""

from zolightning.optim.adam import ZOAdam
from zolightning.optim.conservative import ZOSGDCons
from zolightning.optim.factory import OPTIMIZERS, OptimizerSpec, create_optimizer
from zolightning.optim.hizoo import HiZOO
from zolightning.optim.gradient_update import GradientUpdate
from zolightning.optim.optimizer import ZOOptimizer
from zolightning.optim.sgd import ZOSGD
from zolightning.optim.sign import ZOSGDSign

__all__ = [
    "GradientUpdate",
    "HiZOO",
    "OPTIMIZERS",
    "OptimizerSpec",
    "ZOAdam",
    "ZOOptimizer",
    "ZOSGD",
    "ZOSGDCons",
    "ZOSGDSign",
    "create_optimizer",
]
