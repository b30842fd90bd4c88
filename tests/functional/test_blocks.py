"""Block partitions for MeZO-BCD: tiny random-init Hugging Face models (never downloaded) and custom modules."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
)

from zolightning.functional.blocks import GRANULARITIES, Block, block_of, partition_blocks

LAYERS = 3  # num_hidden_layers of every tiny HF model below


# --------------------------------------------------------------------------------------------------------------------
# Models


def make_opt() -> nn.Module:
    return OPTForCausalLM(
        OPTConfig(
            hidden_size=16,
            num_hidden_layers=LAYERS,
            ffn_dim=32,
            num_attention_heads=2,
            vocab_size=64,
            max_position_embeddings=32,
            word_embed_proj_dim=16,
        )
    )


def make_gpt2() -> nn.Module:
    return GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=LAYERS, n_head=2, vocab_size=64, n_positions=32))


def make_llama() -> nn.Module:
    return LlamaForCausalLM(
        LlamaConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=LAYERS,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=64,
            tie_word_embeddings=False,
        )
    )


def make_bert() -> nn.Module:
    return BertForSequenceClassification(
        BertConfig(
            hidden_size=16,
            num_hidden_layers=LAYERS,
            num_attention_heads=2,
            intermediate_size=32,
            vocab_size=64,
            max_position_embeddings=32,
        )
    )


class ResidualUnit(nn.Module):
    """A never-seen block type: an attention-named mixer, a feed-forward part and a norm."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.token_attn = nn.Linear(width, width)
        self.ff = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_attn(x)
        return self.norm(x + self.ff(x))


class CustomNet(nn.Module):
    """Stem, a stack of 4 identical residual units, a head with a *smaller* repeated container, a root parameter."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # directly on the root: a block of its own
        self.stem = nn.Conv1d(3, width, kernel_size=3, padding=1)
        self.trunk = nn.Module()  # one level of nesting between the root and the stack
        self.trunk.units = nn.ModuleList(ResidualUnit(width) for _ in range(4))
        self.trunk.gate = nn.Linear(width, width)  # a sibling of the stack: its own block "trunk.gate"
        # Also a ModuleList of >= 2 same-typed children, but holding fewer elements: must not be chosen.
        self.heads = nn.ModuleList(nn.Linear(width, 2) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x).transpose(1, 2)
        for unit in self.trunk.units:
            h = unit(h)
        h = self.trunk.gate(h).mean(1) * self.scale
        return torch.stack([head(h) for head in self.heads])


def make_custom() -> nn.Module:
    return CustomNet()


def make_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


MODELS: dict[str, Callable[[], nn.Module]] = {
    "opt": make_opt,
    "gpt2": make_gpt2,
    "llama": make_llama,
    "bert": make_bert,
    "custom": make_custom,
    "mlp": make_mlp,
}
HF_MODELS = ("opt", "gpt2", "llama", "bert")

# Layer-granularity block names besides the layers themselves, and the layer prefix, per HF model.
HF_LAYER_PREFIX = {
    "opt": "model.decoder.layers",
    "gpt2": "transformer.h",
    "llama": "model.layers",
    "bert": "bert.encoder.layer",
}
HF_OTHER_BLOCKS = {
    "opt": ["model.decoder.embed_tokens", "model.decoder.embed_positions", "model.decoder.final_layer_norm"],
    "gpt2": ["transformer.wte", "transformer.wpe", "transformer.ln_f"],  # lm_head is tied to wte: no block of its own
    "llama": ["model.embed_tokens", "model.norm", "lm_head"],
    "bert": ["bert.embeddings", "bert.pooler", "classifier"],
}


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    """One instance of each model, built once (tests that change requires_grad build their own)."""
    torch.manual_seed(0)
    return {name: make() for name, make in MODELS.items()}


def trainable(module: nn.Module) -> dict[str, int]:
    return {name: p.numel() for name, p in module.named_parameters() if p.requires_grad}


def assert_partition(blocks: list[Block], module: nn.Module, trainable_only: bool = True) -> None:
    """Every included parameter in exactly one non-empty block; numels add up; order follows named_parameters()."""
    expected = {n: p.numel() for n, p in module.named_parameters() if p.requires_grad or not trainable_only}
    order = {name: i for i, name in enumerate(expected)}
    seen = [name for block in blocks for name in block.param_names]
    assert len(seen) == len(set(seen)), "a parameter is in two blocks"
    assert set(seen) == set(expected)
    assert len({block.name for block in blocks}) == len(blocks), "block names must be unique"
    for block in blocks:
        assert block.param_names and block.name
        assert block.numel == sum(expected[n] for n in block.param_names)
        positions = [order[n] for n in block.param_names]
        assert positions == sorted(positions), f"{block.name}: parameters out of named_parameters() order"
    firsts = [order[block.param_names[0]] for block in blocks]
    assert firsts == sorted(firsts), "blocks out of order"
    assert sum(block.numel for block in blocks) == sum(expected.values())


# --------------------------------------------------------------------------------------------------------------------
# Partition invariants, every model x every granularity


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("model_name", list(MODELS))
def test_every_trainable_parameter_is_in_exactly_one_block(
    models: dict[str, nn.Module], model_name: str, granularity: str
) -> None:
    module = models[model_name]
    blocks = partition_blocks(module, granularity)
    assert_partition(blocks, module)
    assert blocks == partition_blocks(module, granularity), "partition must be deterministic"
    mapping = block_of(blocks)
    assert set(mapping) == set(trainable(module))
    assert all(name in blocks[index].param_names for name, index in mapping.items())


@pytest.mark.parametrize("model_name", list(MODELS))
def test_patterns_partition_every_model(models: dict[str, nn.Module], model_name: str) -> None:
    module = models[model_name]
    blocks = partition_blocks(module, patterns=[r"(layers|layer|h|units)\.\d+", r"weight"])
    assert_partition(blocks, module)


def test_granularities_refine_each_other(models: dict[str, nn.Module]) -> None:
    # layer ⊇ sublayer ⊇ linear ⊇ parameter: each finer block lies inside one coarser block.
    for module in models.values():
        partitions = [partition_blocks(module, g) for g in GRANULARITIES]
        for coarse, fine in zip(partitions, partitions[1:]):
            owner = block_of(coarse)
            assert len(fine) >= len(coarse)
            for block in fine:
                assert len({owner[n] for n in block.param_names}) == 1


# --------------------------------------------------------------------------------------------------------------------
# layer / sublayer on Hugging Face models


@pytest.mark.parametrize("model_name", HF_MODELS)
def test_layer_granularity_on_hf_models(models: dict[str, nn.Module], model_name: str) -> None:
    names = [block.name for block in partition_blocks(models[model_name], "layer")]
    layers = [f"{HF_LAYER_PREFIX[model_name]}.{i}" for i in range(LAYERS)]
    assert [n for n in names if n.startswith(HF_LAYER_PREFIX[model_name] + ".")] == layers
    assert sorted(names) == sorted(layers + HF_OTHER_BLOCKS[model_name])


def test_layer_block_names_opt_and_llama_exactly(models: dict[str, nn.Module]) -> None:
    # OPT registers final_layer_norm before the layers, so its block comes first: order = first parameter's position.
    assert [b.name for b in partition_blocks(models["opt"], "layer")] == [
        "model.decoder.embed_tokens",
        "model.decoder.embed_positions",
        "model.decoder.final_layer_norm",
        "model.decoder.layers.0",
        "model.decoder.layers.1",
        "model.decoder.layers.2",
    ]
    assert [b.name for b in partition_blocks(models["llama"], "layer")] == [
        "model.embed_tokens",
        "model.layers.0",
        "model.layers.1",
        "model.layers.2",
        "model.norm",
        "lm_head",
    ]


def test_layer_block_holds_the_whole_layer(models: dict[str, nn.Module]) -> None:
    llama = models["llama"]
    block = next(b for b in partition_blocks(llama, "layer") if b.name == "model.layers.1")
    expected = [n for n, p in llama.named_parameters() if n.startswith("model.layers.1.")]
    assert list(block.param_names) == expected
    assert block.numel == sum(p.numel() for p in llama.model.layers[1].parameters())


def test_tied_weights_appear_once_under_their_first_name(models: dict[str, nn.Module]) -> None:
    gpt2 = models["gpt2"]
    assert gpt2.lm_head.weight is gpt2.transformer.wte.weight
    mapping = block_of(partition_blocks(gpt2, "parameter"))
    assert "transformer.wte.weight" in mapping and "lm_head.weight" not in mapping


@pytest.mark.parametrize("model_name", HF_MODELS)
def test_sublayer_gives_two_blocks_per_layer(models: dict[str, nn.Module], model_name: str) -> None:
    module = models[model_name]
    names = [block.name for block in partition_blocks(module, "sublayer")]
    prefix = HF_LAYER_PREFIX[model_name]
    for i in range(LAYERS):
        assert {n for n in names if n.startswith(f"{prefix}.{i}.")} == {f"{prefix}.{i}.attention", f"{prefix}.{i}.mlp"}
    assert len(names) == 2 * LAYERS + len(HF_OTHER_BLOCKS[model_name])


def test_sublayer_split_follows_child_names(models: dict[str, nn.Module]) -> None:
    blocks = {b.name: b for b in partition_blocks(models["llama"], "sublayer")}
    attention = blocks["model.layers.0.attention"].param_names
    mlp = blocks["model.layers.0.mlp"].param_names
    assert all(".self_attn." in n or ".post_attention_layernorm." in n for n in attention)
    assert any(".self_attn.q_proj." in n for n in attention)
    assert all(".mlp." in n or ".input_layernorm." in n for n in mlp)
    bert = {b.name: b for b in partition_blocks(models["bert"], "sublayer")}
    assert all(".attention." in n for n in bert["bert.encoder.layer.2.attention"].param_names)
    assert all(".intermediate." in n or ".output." in n for n in bert["bert.encoder.layer.2.mlp"].param_names)


def test_sublayer_omits_a_part_without_trainable_parameters() -> None:
    llama = make_llama()
    for name, param in llama.named_parameters():
        if ".mlp." in name or "layernorm" in name:
            param.requires_grad_(False)
    names = [b.name for b in partition_blocks(llama, "sublayer")]
    assert [n for n in names if n.startswith("model.layers.")] == [f"model.layers.{i}.attention" for i in range(LAYERS)]


# --------------------------------------------------------------------------------------------------------------------
# Custom architectures


def test_custom_architecture_layer_blocks(models: dict[str, nn.Module]) -> None:
    names = [b.name for b in partition_blocks(models["custom"], "layer")]
    # The 4-unit stack wins over the smaller `heads` ModuleList, whose children are then not layers but one block.
    assert names == ["scale", "stem", "trunk.units.0", "trunk.units.1", "trunk.units.2", "trunk.units.3",
                     "trunk.gate", "heads"]  # fmt: skip


def test_custom_architecture_sublayer_and_linear_blocks(models: dict[str, nn.Module]) -> None:
    custom = models["custom"]
    sub = {b.name: b for b in partition_blocks(custom, "sublayer")}
    attention = sub["trunk.units.2.attention"].param_names
    assert attention == ("trunk.units.2.token_attn.weight", "trunk.units.2.token_attn.bias")
    assert [n.split(".")[3] for n in sub["trunk.units.2.mlp"].param_names] == ["ff"] * 4 + ["norm"] * 2
    linear = [b.name for b in partition_blocks(custom, "linear")]
    assert linear[:3] == ["<root>", "stem", "trunk.units.0.token_attn"]
    assert "trunk.units.0.ff.0" in linear and "trunk.units.0.ff.2" in linear and "heads.1" in linear


def test_plain_sequential_mlp(models: dict[str, nn.Module]) -> None:
    # Linear/ReLU children differ in type: no repeated stack, so one block per top-level child that has parameters.
    assert [b.name for b in partition_blocks(models["mlp"], "layer")] == ["0", "2", "4"]
    assert [b.name for b in partition_blocks(models["mlp"], "sublayer")] == ["0", "2", "4"]
    # A Sequential of identical layers is itself the repeated container (its path is the root "").
    stack = nn.Sequential(*(nn.Linear(4, 4) for _ in range(3)))
    assert [b.name for b in partition_blocks(stack, "layer")] == ["0", "1", "2"]
    assert [b.name for b in partition_blocks(stack, "sublayer")] == ["0.mlp", "1.mlp", "2.mlp"]
    assert [b.name for b in partition_blocks(stack, "linear")] == ["0", "1", "2"]


def test_single_parameter_module() -> None:
    blocks = partition_blocks(nn.Linear(3, 2, bias=False))
    assert blocks == [Block("weight", ("weight",), 6)]
    assert [b.name for b in partition_blocks(nn.Linear(3, 2), "linear")] == ["<root>"]


# --------------------------------------------------------------------------------------------------------------------
# Frozen parameters


def test_frozen_embeddings_never_appear() -> None:
    opt = make_opt()
    opt.model.decoder.embed_tokens.weight.requires_grad_(False)  # also freezes the tied lm_head
    opt.model.decoder.embed_positions.weight.requires_grad_(False)
    for granularity in GRANULARITIES:
        blocks = partition_blocks(opt, granularity)
        assert_partition(blocks, opt)
        assert not any("embed" in n for b in blocks for n in b.param_names)
    assert [b.name for b in partition_blocks(opt, "layer")] == ["model.decoder.final_layer_norm"] + [
        f"model.decoder.layers.{i}" for i in range(LAYERS)
    ]
    # trainable_only=False brings them back.
    everything = partition_blocks(opt, "layer", trainable_only=False)
    assert_partition(everything, opt, trainable_only=False)
    assert "model.decoder.embed_tokens" in [b.name for b in everything]


def add_lora_like_adapters(model: nn.Module, rank: int = 2) -> list[str]:
    """Freeze everything, then add trainable A/B factors to every q_proj and v_proj; returns their names."""
    model.requires_grad_(False)
    for name, child in model.named_modules():
        if name.endswith(("q_proj", "v_proj")):
            child.register_parameter("lora_A", nn.Parameter(torch.zeros(rank, child.in_features)))
            child.register_parameter("lora_B", nn.Parameter(torch.zeros(child.out_features, rank)))
    return [n for n, p in model.named_parameters() if p.requires_grad]


def test_only_lora_like_parameters_are_partitioned() -> None:
    llama = make_llama()
    adapters = add_lora_like_adapters(llama)
    assert len(adapters) == 4 * LAYERS
    for granularity in GRANULARITIES:
        blocks = partition_blocks(llama, granularity)
        assert_partition(blocks, llama)
        assert sorted(block_of(blocks)) == sorted(adapters)
    assert [b.name for b in partition_blocks(llama, "layer")] == [f"model.layers.{i}" for i in range(LAYERS)]
    # Only the attention part of each layer holds adapters, so the mlp parts are omitted.
    assert [b.name for b in partition_blocks(llama, "sublayer")] == [
        f"model.layers.{i}.attention" for i in range(LAYERS)
    ]
    assert len(partition_blocks(llama, "linear")) == 2 * LAYERS


def test_frozen_stack_falls_back_to_top_level_children() -> None:
    llama = make_llama()
    llama.model.layers.requires_grad_(False)
    # The stack holds no trainable elements, so there is no layer container: one block per top-level child.
    assert [b.name for b in partition_blocks(llama, "layer")] == ["model", "lm_head"]
    assert partition_blocks(llama, "layer")[0].param_names == ("model.embed_tokens.weight", "model.norm.weight")
    llama.model.requires_grad_(False)
    assert [b.name for b in partition_blocks(llama, "layer")] == ["lm_head"]


# --------------------------------------------------------------------------------------------------------------------
# Patterns


def test_patterns_one_block_per_layer_plus_rest(models: dict[str, nn.Module]) -> None:
    llama = models["llama"]
    blocks = partition_blocks(llama, patterns=[r"layers\.\d+"])
    assert [b.name for b in blocks] == ["rest", "layers.0", "layers.1", "layers.2"]
    assert blocks[0].param_names == ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight")
    assert_partition(blocks, llama)


def test_patterns_override_granularity_first_match_wins_and_rest_only_if_needed(models: dict[str, nn.Module]) -> None:
    llama = models["llama"]
    a = partition_blocks(llama, "parameter", patterns=[r"self_attn", r"layers\.\d+", r"^.*$"])
    names = [b.name for b in a]
    assert "rest" not in names and "self_attn" in names  # the catch-all matched every leftover
    assert len(next(b for b in a if b.name == "self_attn").param_names) == 4 * LAYERS  # all layers' attention
    assert next(b for b in a if b.name == "layers.1").param_names[0] == "model.layers.1.mlp.gate_proj.weight"
    # A single string is one pattern, not a sequence of one-character patterns.
    assert partition_blocks(llama, patterns=r"layers\.\d+") == partition_blocks(llama, patterns=[r"layers\.\d+"])
    # No patterns (None or empty) means "use the granularity".
    assert partition_blocks(llama, "linear", patterns=[]) == partition_blocks(llama, "linear")


def test_invalid_pattern_raises_naming_it(models: dict[str, nn.Module]) -> None:
    bad = r"layers\.(\d+"
    with pytest.raises(ValueError, match=re.escape("in `patterns`")) as info:
        partition_blocks(models["llama"], patterns=[r"ok", bad])
    # The message quotes the pattern as written (not repr's doubled backslashes) and the regex error.
    assert f'"{bad}"' in str(info.value) and "missing )" in str(info.value)


def test_empty_match_raises(models: dict[str, nn.Module]) -> None:
    with pytest.raises(ValueError, match="empty"):
        partition_blocks(models["llama"], patterns=[r"(layers\.\d+)?"])


# --------------------------------------------------------------------------------------------------------------------
# Errors and helpers


def test_bad_granularity_lists_the_choices(models: dict[str, nn.Module]) -> None:
    with pytest.raises(ValueError, match="`granularity` must be one of .* got 'layers'") as info:
        partition_blocks(models["mlp"], "layers")
    assert all(g in str(info.value) for g in GRANULARITIES)


def test_module_without_trainable_parameters_raises() -> None:
    frozen = make_mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        partition_blocks(frozen)
    assert len(partition_blocks(frozen, trainable_only=False)) == 3
    with pytest.raises(ValueError, match="no parameters"):
        partition_blocks(nn.ReLU(), trainable_only=False)


def test_block_of_maps_names_to_indices_and_rejects_overlaps() -> None:
    blocks = [Block("a", ("x", "y"), 3), Block("b", ["z"], 1)]  # a list is stored as a tuple
    assert blocks[1].param_names == ("z",) and hash(blocks[1])
    assert block_of(blocks) == {"x": 0, "y": 0, "z": 1}
    with pytest.raises(ValueError, match="'y'"):
        block_of([*blocks, Block("c", ("y",), 1)])
    with pytest.raises(ValueError, match="never empty"):
        Block("empty", (), 0)
