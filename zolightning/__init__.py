"""zolightning: zeroth-order (MeZO-style) training as a first-class citizen of PyTorch Lightning.

Layers, each calling only those below it (``docs/architecture.md``): :mod:`zolightning.functional` (pure functions),
:mod:`zolightning.structures`, :mod:`zolightning.estimators` and :mod:`zolightning.optim`, the step engine
(:class:`StepEngine`), :class:`ZOLightningModule` / :func:`as_zo` and ``zolightning.callbacks``, and the CLI
(:mod:`zolightning.cli`).
"""

from zolightning.config import ZOConfig
from zolightning.engine import StepEngine
from zolightning.module import ZOLightningModule
from zolightning.strategies import DeviceMapStrategy
from zolightning.wrap import as_zo

__all__ = ["DeviceMapStrategy", "StepEngine", "ZOConfig", "ZOLightningModule", "as_zo"]
__version__ = "0.1.0"
