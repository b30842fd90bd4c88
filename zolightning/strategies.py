"""``DeviceMapStrategy``: train a model placed across devices with Hugging Face ``device_map``, in one process."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.strategies import SingleDeviceStrategy
from typing_extensions import override


class DeviceMapStrategy(SingleDeviceStrategy):
    """A single-process strategy that leaves the model where ``device_map`` put it.

    Lightning's single-device strategy moves the whole module to one device at setup, which undoes a map that spreads
    the layers over several GPUs (the point of the map when the model does not fit on one). This strategy skips that
    move. Batches go to ``device`` (default: the device of the model's first parameter, usually the map's first), and
    accelerate's hooks carry the activations from block to block. ZO perturbs and updates every weight in place, on
    whichever device it lives.

    Args:
        device: where batches are sent (default: inferred at setup from the first parameter).
        **kwargs: passed to ``SingleDeviceStrategy``.
    """

    strategy_name = "device_map"

    def __init__(self, device: str | torch.device | None = None, **kwargs: Any) -> None:
        super().__init__(device=device if device is not None else "cpu", **kwargs)
        self._infer_device = device is None

    @override
    def setup(self, trainer: Any) -> None:
        if self._infer_device and self.lightning_module is not None:
            first = next(self.lightning_module.parameters(), None)
            if first is not None and first.device.type != "meta":
                self._root_device = first.device
        super().setup(trainer)

    @override
    def model_to_device(self) -> None:
        # Each block already sits on the device the map gave it; moving the module would gather it onto one.
        return None
