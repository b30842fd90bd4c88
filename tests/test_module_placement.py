"""Models placed with Hugging Face ``device_map`` (accelerate hooks) train; offloaded weights are refused.

This machine has only a CPU, so every module is placed on "cpu" explicitly and the hooks that a multi-device map
attaches are forced on; offload ("disk" entries, ``accelerate.cpu_offload``) is real.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import trainer_kwargs
from zolightning import ZOLightningModule

transformers = pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")

# Every top-level block of BertForSequenceClassification, placed explicitly.
DEVICE_MAP = {
    "bert.embeddings": "cpu",
    "bert.encoder.layer.0": "cpu",
    "bert.encoder.layer.1": "cpu",
    "bert.pooler": "cpu",
    "classifier": "cpu",
}


class SequenceClassifier(ZOLightningModule):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(zo=dict(lr=0.02, eps=1e-3, seed=0))
        self.model = model

    def training_step(self, batch, batch_idx):
        input_ids, labels = batch
        return self.model(input_ids=input_ids, labels=labels).loss


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny BERT classifier (hidden 32, 2 layers) saved with ``save_pretrained``."""
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=16, num_labels=2,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-bert")
    transformers.BertForSequenceClassification(config).save_pretrained(path)
    return path


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, 64, (64, 8), generator=generator)
    return input_ids, (input_ids[:, 1] < 48).long()  # 3:1 classes, set by one token: loss ln 2 → below 0.5


def loader() -> DataLoader:
    return DataLoader(TensorDataset(*data()), batch_size=32, shuffle=False)


def full_loss(model: torch.nn.Module) -> float:
    input_ids, labels = data()
    model.eval()
    with torch.no_grad():
        return float(model(input_ids=input_ids, labels=labels).loss)


def exception_chain(error: BaseException | None) -> Iterator[BaseException]:
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def test_a_model_placed_with_device_map_and_accelerate_hooks_trains(checkpoint):
    model = transformers.BertForSequenceClassification.from_pretrained(checkpoint, device_map=DEVICE_MAP)
    # A map over one device attaches no hooks; force the ones a map over several devices attaches.
    model = accelerate.dispatch_model(model, device_map=DEVICE_MAP, force_hooks=True)
    hooked = [name for name, module in model.named_modules() if hasattr(module, "_hf_hook")]
    assert {"bert.embeddings", "bert.encoder.layer.0", "classifier"} <= set(hooked)
    assert model.hf_device_map == DEVICE_MAP
    before = full_loss(model)
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}

    Trainer(max_steps=30, **trainer_kwargs()).fit(SequenceClassifier(model), loader())

    assert all(hasattr(module, "_hf_hook") for name, module in model.named_modules() if name in hooked)
    moved = [name for name, p in model.named_parameters() if not torch.equal(p, initial[name])]
    assert len(moved) == len(initial)  # every block, through its hooks, was perturbed and updated
    assert full_loss(model) < 0.9 * before  # measured: 0.684 → 0.492


@pytest.mark.parametrize("offload", ["disk", "disk-frozen", "cpu_offload"])
def test_offloaded_weights_on_the_meta_device_are_refused_with_the_fix(checkpoint, tmp_path, offload):
    if offload.startswith("disk"):
        device_map = {**DEVICE_MAP, "bert.encoder.layer.1": "disk"}
        model = transformers.BertForSequenceClassification.from_pretrained(
            checkpoint, device_map=device_map, offload_folder=str(tmp_path / "offload")
        )
        if offload == "disk-frozen":
            # Frozen offloaded weights would keep ZO correct, but Lightning moves the whole module to its device,
            # which fails on 'meta' tensors: refused as well, before that obscure failure.
            model.bert.encoder.layer[1].requires_grad_(False)
    else:
        model = transformers.BertForSequenceClassification.from_pretrained(checkpoint)
        accelerate.cpu_offload(model, execution_device=torch.device("cpu"))
    assert any(p.device.type == "meta" for p in model.parameters())
    full_loss(model)  # the hooks make the offloaded model run; an in-place edit of its weights would be lost
    # Lightning's teardown after the refusal moves the module to CPU, which fails again on the 'meta' tensors; the
    # refusal is the first error of the chain.
    with pytest.raises(Exception) as info:
        Trainer(max_steps=1, **trainer_kwargs()).fit(SequenceClassifier(model), loader())
    refusals = [e for e in exception_chain(info.value) if isinstance(e, ValueError) and "'meta' device" in str(e)]
    assert refusals, info.value
    message = str(refusals[0])
    assert "offloaded" in message and "Place every parameter on a real device" in message
    offloaded = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    trainable = 0 if offload == "disk-frozen" else len(offloaded)
    assert f"{len(offloaded)} parameter(s) ({trainable} trainable)" in message
    if offload.startswith("disk"):
        assert "bert.encoder.layer.1" in message


def test_the_device_map_strategy_never_moves_the_model_and_trains(checkpoint, monkeypatch):
    from zolightning import DeviceMapStrategy

    model = transformers.BertForSequenceClassification.from_pretrained(checkpoint, device_map=DEVICE_MAP)
    model = accelerate.dispatch_model(model, device_map=DEVICE_MAP, force_hooks=True)
    module = SequenceClassifier(model)
    moves = []
    original = torch.nn.Module.to

    def recording_to(self, *args, **kwargs):
        moves.append(type(self).__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", recording_to)
    before = full_loss(model)
    trainer = Trainer(max_steps=30, strategy=DeviceMapStrategy(), **trainer_kwargs())
    trainer.fit(module, loader())
    # Lightning's default single-device strategy moves the whole module (undoing a multi-device map); this one never.
    assert "SequenceClassifier" not in moves
    assert trainer.strategy.root_device == torch.device("cpu")
    assert full_loss(model) < 0.9 * before
    moves.clear()
    Trainer(max_steps=1, **trainer_kwargs()).fit(SequenceClassifier(model), loader())
    assert "SequenceClassifier" in moves  # the control: the default strategy does move it
