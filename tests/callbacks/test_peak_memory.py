"""PeakMemory: the peak of the fit (after the model exists) grows with what the fit allocates."""

from __future__ import annotations

import resource
import sys

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import trainer_kwargs
from zolightning import ZOConfig, ZOLightningModule
from zolightning.callbacks import PeakMemory


class Allocating(ZOLightningModule):
    def __init__(self, megabytes: int) -> None:
        super().__init__(zo=ZOConfig(lr=1e-3))
        self.net = torch.nn.Linear(2, 1)
        self.megabytes = megabytes

    def training_step(self, batch, batch_idx):
        if self.megabytes:
            scratch = torch.ones(self.megabytes * 2**18)  # float32: 4 bytes each, touched so it is resident
            del scratch
        return self.net(batch[0]).pow(2).mean()


def peak_after_fit(megabytes: int) -> PeakMemory:
    callback = PeakMemory(verbose=False)
    loader = DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2)
    Trainer(max_steps=1, callbacks=[callback], **trainer_kwargs()).fit(Allocating(megabytes), loader)
    return callback


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="resettable RSS peak is Linux's /proc")
def test_peak_counts_what_the_fit_allocates_and_not_what_came_before():
    transient = torch.ones(600 * 2**18)  # a 600 MB peak before the fit, freed: outside the measured window
    del transient
    lifetime_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    quiet = peak_after_fit(0)
    busy = peak_after_fit(400)
    assert quiet.kind == busy.kind == "cpu_rss_since_fit_start"
    assert quiet.peak_bytes < lifetime_peak - 400 * 2**20
    assert busy.peak_bytes - quiet.peak_bytes > 300 * 2**20
