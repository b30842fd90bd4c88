"""Which parameters a trainable choice selects."""

from __future__ import annotations

import pytest
from torch import nn

from zolightning.tasks.trainable import apply_trainable, parse_trainable, select_trainable


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.scale = nn.Linear(4, 4, bias=False)


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.layers = nn.ModuleList([Block() for _ in range(3)])
        self.head = nn.Linear(4, 2)


def test_parse_trainable():
    assert parse_trainable("head+norms") == ("head", "norms")
    assert parse_trainable(" head + last_layer ") == ("head", "last_layer")
    with pytest.raises(ValueError, match=r"Unknown trainable part\(s\) \['lora'\]"):
        parse_trainable("head+lora")
    with pytest.raises(ValueError, match="non-empty"):
        parse_trainable("")


def test_each_part_selects_what_it_documents():
    toy = Toy()
    assert select_trainable(toy, "head", ("head.",)) == ["head.weight", "head.bias"]
    norms = select_trainable(toy, "norms")
    assert norms == [name for i in range(3) for name in
                     (f"layers.{i}.dense.bias", f"layers.{i}.norm.weight", f"layers.{i}.norm.bias")] + ["head.bias"]
    assert select_trainable(toy, "last_layer") == [
        "layers.2.dense.weight", "layers.2.dense.bias", "layers.2.norm.weight", "layers.2.norm.bias",
        "layers.2.scale.weight"]
    assert select_trainable(toy, "all") == [name for name, _ in toy.named_parameters()]
    assert set(select_trainable(toy, "head+norms", ("head.",))) == set(norms) | {"head.weight", "head.bias"}


def test_apply_trainable_sets_requires_grad_exactly():
    toy = Toy()
    chosen = apply_trainable(toy, "head+last_layer", ("head.",))
    assert {name for name, p in toy.named_parameters() if p.requires_grad} == set(chosen)
    apply_trainable(toy, "head", ("head.",))
    assert {name for name, p in toy.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}


def test_impossible_choices_are_refused():
    with pytest.raises(ValueError, match="has no head"):
        select_trainable(Toy(), "head")
    with pytest.raises(ValueError, match="no numbered transformer blocks"):
        select_trainable(nn.Sequential(nn.Linear(2, 2)), "last_layer")
    with pytest.raises(ValueError, match="selects no parameter"):
        select_trainable(nn.Sequential(nn.Linear(2, 2, bias=False)), "norms")
