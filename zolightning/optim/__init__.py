"""Layer 2: zeroth-order optimizers with the ``torch.optim`` interface."""

from zolightning.optim.optimizer import ZOOptimizer, trainable_tensors
from zolightning.optim.sgd import ZOSGD

__all__ = ["ZOOptimizer", "ZOSGD", "trainable_tensors"]
