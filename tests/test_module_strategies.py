"""Strategies that shard or re-own the parameters (FSDP, DeepSpeed) are refused at setup, by the module and by the
structure callbacks, with a message naming what is supported."""

from __future__ import annotations

import os

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.strategies import FSDPStrategy, SingleDeviceStrategy

from tests.conftest import trainer_kwargs
from tests.ddp_helpers import Interleaved, Regressor
from zolightning.callbacks import BlockRotation
from zolightning.trainer_checks import SHARDED_STRATEGIES


class CPUFSDP(FSDPStrategy):
    """Lightning refuses ``FSDPStrategy`` itself on CPU when the Trainer is built (an exact type check); a subclass
    builds, initializes its process group and would only fail when wrapping the model, after the setup hooks. A
    subclass must be refused like the class it derives from."""


class DeepSpeedStrategy(SingleDeviceStrategy):
    """A stand-in under the real class's name: deepspeed is not installed, and Lightning's ``DeepSpeedStrategy``
    cannot be built without it. Without the refusal this would train like a single device."""


@pytest.fixture
def restore_process_state():
    """FSDP's launcher sets LOCAL_RANK, MASTER_PORT, … in ``os.environ`` and initializes a process group; later
    Trainers in this process would take them for an external launcher, so both are undone."""
    environ = dict(os.environ)
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    os.environ.clear()
    os.environ.update(environ)


@pytest.mark.parametrize("strategy", [CPUFSDP, DeepSpeedStrategy], ids=["fsdp-subclass", "deepspeed-by-name"])
@pytest.mark.parametrize("structured", [False, True], ids=["module", "block-rotation"])
def test_a_sharding_strategy_is_refused_at_setup_naming_what_is_supported(strategy, structured, restore_process_state):
    assert "FSDPStrategy" in SHARDED_STRATEGIES and "DeepSpeedStrategy" in SHARDED_STRATEGIES
    instance = strategy() if strategy is CPUFSDP else strategy(device=torch.device("cpu"))
    callbacks = [BlockRotation()] if structured else []
    trainer = Trainer(strategy=instance, max_steps=1, use_distributed_sampler=False, callbacks=callbacks,
                      **trainer_kwargs())
    model = Regressor()
    before = [p.detach().clone() for p in model.parameters()]
    # The structure callback's setup runs before the module's, so it is the one that reports.
    match = "BlockRotation needs each parameter whole" if structured else "ZO training does not support"
    with pytest.raises(ValueError, match=match) as info:
        trainer.fit(model, datamodule=Interleaved(8))
    message = str(info.value)
    assert strategy.__name__ in message
    assert "'ddp', 'ddp_spawn', 'ddp_fork'" in message and "ModelParallelStrategy" in message
    assert trainer.global_step == 0
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


class ModelParallelStrategy(SingleDeviceStrategy):
    """A stand-in under the FSDP2 strategy's name (the real one needs a launch of several processes): what ZO accepts
    and refuses under it is decided by the name, before anything is sharded."""


@pytest.mark.parametrize("rule", ["sparse", "low-rank"])
def test_under_fsdp2_a_rule_that_needs_whole_matrices_is_refused_and_block_rotation_is_not(rule):
    from zolightning.callbacks import LowRankRefresh, SparsityMask

    callback = SparsityMask(sparsity=0.5) if rule == "sparse" else LowRankRefresh(rank=2, refresh_interval=3)
    trainer = Trainer(strategy=ModelParallelStrategy(device=torch.device("cpu")), max_steps=1,
                      use_distributed_sampler=False, callbacks=[callback], **trainer_kwargs())
    model = Regressor()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="needs each weight matrix whole, which ModelParallelStrategy shards"):
        trainer.fit(model, datamodule=Interleaved(8))
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    # BlockRotation picks whole parameters by name: accepted (here on whole weights, as the stand-in shards nothing).
    trainer = Trainer(strategy=ModelParallelStrategy(device=torch.device("cpu")), max_steps=2,
                      use_distributed_sampler=False, callbacks=[BlockRotation()], **trainer_kwargs())
    trainer.fit(Regressor(), datamodule=Interleaved(8))
    assert trainer.global_step == 2


def test_under_fsdp2_a_torch_optimizer_fed_by_zo_is_refused_before_the_first_step(restore_process_state):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)

    class Sharded(Regressor):
        forwards = 0

        def configure_model(self) -> None:
            fully_shard(self.net, mesh=init_device_mesh("cpu", (1,)))

        def training_step(self, batch, batch_idx):
            Sharded.forwards += 1
            return super().training_step(batch, batch_idx)

    model = Sharded(optimizer="sgd")
    trainer = Trainer(strategy=ModelParallelStrategy(device=torch.device("cpu")), max_steps=1,
                      use_distributed_sampler=False, **trainer_kwargs())
    with pytest.raises(ValueError, match="SGD .* cannot update sharded weights.*zolightning.optim.ZOSGD"):
        trainer.fit(model, datamodule=Interleaved(8))
    assert trainer.global_step == 0 and Sharded.forwards == 0  # refused when the fit starts, not at the first step
