"""zolightning: zeroth-order (MeZO-style) training as a first-class citizen of PyTorch Lightning.

Layers, each importing only those below it (``docs/architecture.md``): :mod:`zolightning.functional` (pure functions
and value objects); :mod:`zolightning.structures` and :mod:`zolightning.estimators`; the step engine
(:class:`StepEngine`, whose ``measure`` is the first call of a step) and :class:`ZOConfig`; :mod:`zolightning.optim`
(whose ``apply`` is the second) and :mod:`zolightning.diagnostics`; :class:`ZOLightningModule` / :func:`as_zo`,
``zolightning.callbacks``, :mod:`zolightning.trajectory` and :mod:`zolightning.tasks`; and the CLI
(:mod:`zolightning.cli`).
"""

from zolightning.config import ZOConfig
from zolightning.engine import StepEngine
from zolightning.module import ZOLightningModule
from zolightning.strategies import DeviceMapStrategy
from zolightning.wrap import as_zo

from zolightning.version import __version__

__all__ = ["DeviceMapStrategy", "StepEngine", "ZOConfig", "ZOLightningModule", "__version__", "as_zo"]
