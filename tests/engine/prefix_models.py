"""Tiny models of several architectures (random weights) and a ZO loop over them, with and without prefix reuse."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
)

from zolightning.config import ZOConfig
from zolightning.engine import StepEngine
from zolightning.optim import ZOSGD
from zolightning.structures import BlockSelection

VOCAB = 64
IDS = torch.randint(0, VOCAB, (3, 9), generator=torch.Generator().manual_seed(0))


class Stacked(nn.Module):
    """A custom model no other test names: an input projection, an nn.Sequential of residual blocks, a head."""

    class Residual(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.inner = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))

        def forward(self, x):
            return x + self.inner(x)

    def __init__(self, width: int = 12, depth: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(5, width)
        self.trunk = nn.Sequential(*(self.Residual(width) for _ in range(depth)))
        self.out = nn.Linear(width, 1)

    def forward(self, x):
        return self.out(self.trunk(self.inp(x)))


def build(name: str) -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor]]:
    """A tiny ``name`` model in eval mode and its loss function."""
    torch.manual_seed(0)
    small = dict(vocab_size=VOCAB)
    if name == "llama":
        model = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                                             num_attention_heads=4, num_key_value_heads=2, **small))
    elif name == "opt":
        model = OPTForCausalLM(OPTConfig(hidden_size=16, ffn_dim=32, num_hidden_layers=4, num_attention_heads=4,
                                         word_embed_proj_dim=16, max_position_embeddings=32, **small))
    elif name == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=4, n_head=4, n_positions=32, **small))
    elif name == "bert":
        model = BertForSequenceClassification(BertConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                                                         num_attention_heads=4, max_position_embeddings=32,
                                                         num_labels=3, **small))
        labels = torch.tensor([0, 2, 1])
        return model.eval(), lambda m: m(input_ids=IDS, labels=labels).loss
    elif name == "bart":
        model = BartForConditionalGeneration(BartConfig(d_model=16, encoder_layers=3, decoder_layers=3,
                                                        encoder_attention_heads=4, decoder_attention_heads=4,
                                                        encoder_ffn_dim=32, decoder_ffn_dim=32,
                                                        max_position_embeddings=32, **small))
        return model.eval(), lambda m: m(input_ids=IDS, labels=IDS[:, :6].contiguous()).loss
    elif name == "stacked":
        model = Stacked()
        x = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
        return model.eval(), lambda m: m(x).pow(2).mean()
    else:
        raise ValueError(name)
    return model.eval(), lambda m: m(input_ids=IDS, labels=IDS).loss


def zo_run(name: str, reuse: bool, steps: int, **optimizer_options) -> tuple[list[float], torch.Tensor, list]:
    """``steps`` ZO-SGD block steps (one layer-granularity block per step, cyclic); the losses, the final weights and
    each step's prefix report."""
    model, loss = build(name)
    model = copy.deepcopy(model)
    optimizer = ZOSGD(model.named_parameters(), lr=optimizer_options.pop("lr", 1e-2), eps=1e-3, **optimizer_options)
    optimizer.use_engine(StepEngine(ZOConfig(prefix_reuse=reuse)))
    optimizer.engine.install(BlockSelection("layer"), module=model)
    losses, reports = [], []
    for _ in range(steps):
        losses.append(float(optimizer.step(lambda: loss(model))))
        reports.append(optimizer.engine.last.prefix)
    return losses, torch.cat([p.detach().flatten() for p in model.parameters()]), reports
