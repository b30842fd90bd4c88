"""zolightning: zeroth-order (MeZO-style) training as a first-class citizen of PyTorch Lightning.

Layers, each calling only those below it: :mod:`zolightning.functional` (noise, directions, structures, estimators),
:mod:`zolightning.optim` (``torch.optim``-style ZO optimizers), :class:`ZOLightningModule` and :func:`as_zo`,
``zolightning.callbacks``, and the CLI (:mod:`zolightning.cli`).
"""

from zolightning.config import ZOConfig
from zolightning.module import ZOLightningModule
from zolightning.strategies import DeviceMapStrategy
from zolightning.wrap import as_zo

__all__ = ["DeviceMapStrategy", "ZOConfig", "ZOLightningModule", "as_zo"]
__version__ = "0.1.0"
