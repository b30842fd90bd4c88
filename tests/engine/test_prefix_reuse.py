"""Prefix reuse: exact on every architecture, really skips the prefix, and falls back (and says so) where it cannot
apply."""

from __future__ import annotations

import pytest
import torch

from tests.engine.prefix_models import IDS, build, zo_run
from zolightning import ZOConfig
from zolightning.engine.prefix_reuse import PrefixReuse
from zolightning.engine.step import StepEngine
from zolightning.optim import ZOSGD, HiZOO, ZOSGDCons
from zolightning.structures import BlockSelection, SparseDirections


@pytest.mark.parametrize("name", ["llama", "opt", "gpt2", "bert", "bart", "stacked"])
def test_losses_and_weights_are_bitwise_those_without_reuse(name):
    with_reuse = zo_run(name, True, 10)
    without = zo_run(name, False, 10)
    assert with_reuse[0] == without[0]
    assert torch.equal(with_reuse[1], without[1])
    reused = [report for report in with_reuse[2] if report.reused_evaluations]
    assert reused, [report.reason for report in with_reuse[2]]
    assert all(report is None for report in without[2])


def count_mlp_calls(model) -> list[int]:
    calls = [0] * len(model.model.layers)
    for index, layer in enumerate(model.model.layers):
        layer.mlp.register_forward_pre_hook(lambda *_, i=index: calls.__setitem__(i, calls[i] + 1))
    return calls


def llama_engine(block: str, optimizer_class=ZOSGD, reuse: bool = True, **config):
    """A tiny Llama whose only active block is ``block`` (a layer index, or "embed" / "norm")."""
    model, loss = build("llama")
    pattern = {"embed": "embed_tokens", "norm": "model.norm"}.get(block, f"layers.{block}.")
    for name, p in model.named_parameters():
        p.requires_grad_(pattern in name)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    optimizer = optimizer_class(trainable, lr=1e-3, eps=1e-3)
    optimizer.use_engine(StepEngine(ZOConfig(prefix_reuse=reuse, **config), module=model))
    return model, loss, optimizer


def test_a_middle_block_step_runs_the_prefix_once_and_the_suffix_at_every_evaluation():
    model, loss, optimizer = llama_engine("2")
    calls = count_mlp_calls(model)
    optimizer.step(lambda: loss(model))
    assert optimizer.engine.last.prefix.skipped_layers == 2
    assert calls == [1, 1, 2, 2]


@pytest.mark.parametrize(
    ("optimizer_class", "config", "evaluations"),
    [(ZOSGD, {}, 2), (ZOSGD, {"num_directions": 3}, 6), (ZOSGD, {"estimator": "one-sided"}, 2),
     (HiZOO, {}, 3), (ZOSGDCons, {}, 5), (ZOSGD, {"estimator": "fzoo", "num_directions": 3}, 4)],
)
def test_the_prefix_runs_once_whatever_the_number_of_evaluations(optimizer_class, config, evaluations):
    model, loss, optimizer = llama_engine("3", optimizer_class, **config)
    calls = count_mlp_calls(model)
    optimizer.step(lambda: loss(model))
    assert calls == [1, 1, 1, evaluations]
    assert optimizer.engine.last.prefix.reused_evaluations == evaluations - 1


@pytest.mark.parametrize(
    ("block", "reason"),
    [("embed", "before any layer of a stack finishes"), ("0", "before any layer of a stack finishes")],
)
def test_blocks_at_the_start_run_in_full_and_say_why(block, reason):
    model, loss, optimizer = llama_engine(block)
    calls = count_mlp_calls(model)
    optimizer.step(lambda: loss(model))
    assert optimizer.engine.last.prefix.reused_evaluations == 0
    assert reason in optimizer.engine.last.prefix.reason
    assert calls == [2, 2, 2, 2]


def test_a_dense_or_sparse_structure_spanning_blocks_runs_in_full():
    model, loss = build("llama")
    optimizer = ZOSGD(model.named_parameters(), lr=1e-3, eps=1e-3)
    optimizer.engine.install(SparseDirections(sparsity=0.5), module=model)
    optimizer.step(lambda: loss(model))
    assert optimizer.engine.last.prefix.reused_evaluations == 0


def test_train_mode_dropout_runs_in_full():
    model, loss, optimizer = llama_engine("2")
    model.train()
    optimizer.step(lambda: loss(model))
    assert "train mode" in optimizer.engine.last.prefix.reason


def test_an_objective_that_runs_the_model_twice_runs_in_full():
    model, loss, optimizer = llama_engine("2")
    reference = llama_engine("2", reuse=False)
    twice = lambda m: loss(m) + m(input_ids=IDS.flip(0), labels=IDS.flip(0)).loss  # noqa: E731
    optimizer.step(lambda: twice(model))
    reference[2].step(lambda: twice(reference[0]))
    assert "more than once" in optimizer.engine.last.prefix.reason
    assert torch.equal(torch.cat([p.flatten() for p in model.parameters()]),
                       torch.cat([p.flatten() for p in reference[0].parameters()]))


class OutOfOrder(torch.nn.Module):
    """A stack whose forward runs layer 1 before layer 0."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(4))

    def forward(self, x):
        for index in (1, 0, 2, 3):
            x = torch.tanh(self.layers[index](x))
        return x.pow(2).mean()


def test_a_forward_that_runs_the_stack_out_of_order_runs_in_full():
    torch.manual_seed(0)
    model = OutOfOrder().eval()
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("layers.3."))
    optimizer = ZOSGD([(n, p) for n, p in model.named_parameters() if p.requires_grad], lr=1e-2, eps=1e-3)
    optimizer.engine.module = model
    x = torch.randn(5, 4)
    optimizer.step(lambda: model(x))
    assert "out of order" in optimizer.engine.last.prefix.reason


def test_accumulated_micro_batches_each_reuse_their_own_prefix_exactly():
    results = []
    for reuse in (True, False):
        model, loss, optimizer = llama_engine("2", reuse=reuse)
        halves = (IDS[:2], IDS[2:])
        for ids in halves[:-1]:
            optimizer.step(lambda ids=ids: model(input_ids=ids, labels=ids).loss, step=0, accumulate=True)
        optimizer.step(lambda: model(input_ids=halves[-1], labels=halves[-1]).loss, step=0)
        results.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(*results)


def test_the_forward_gradient_estimator_runs_in_full():
    model, loss, optimizer = llama_engine("2")
    optimizer.engine.estimator = StepEngine(ZOConfig(estimator="forward-gradient"), module=model).estimator
    optimizer.step(lambda: loss(model))
    assert "finite differences" in optimizer.engine.last.prefix.reason


def test_one_activation_is_kept_the_input_of_the_active_block():
    model, loss, optimizer = llama_engine("2")
    reuse = PrefixReuse(model)
    session = reuse.session(optimizer.engine.plan(0))
    session.wrap(lambda: loss(model))()
    kept = [leaf for value in session.cached.values() for leaf in torch.utils._pytree.tree_leaves(value)
            if isinstance(leaf, torch.Tensor)]
    assert len(kept) == 1 and kept[0].shape == (*IDS.shape, model.config.hidden_size)
    session.close()
    assert session.cached == {}


def test_lora_adapters_per_layer_reuse_the_prefix_exactly():
    peft = pytest.importorskip("peft")
    results = []
    for reuse in (True, False):
        model, loss = build("llama")
        model = peft.inject_adapter_in_model(peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]), model)
        model.eval()  # peft creates its adapter modules in train mode
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)
        optimizer = ZOSGD([(n, p) for n, p in model.named_parameters() if p.requires_grad], lr=1e-1, eps=1e-2)
        optimizer.use_engine(StepEngine(ZOConfig(prefix_reuse=reuse)))
        optimizer.engine.install(BlockSelection("layer"), module=model)
        reports = []
        for _ in range(4):
            optimizer.step(lambda: loss(model))
            reports.append(optimizer.engine.last.prefix)
        results.append((torch.cat([p.flatten() for p in model.parameters()]), reports))
    assert torch.equal(results[0][0], results[1][0])
    assert [r.skipped_layers for r in results[0][1]] == [0, 1, 2, 3]


def fallback_is_exact(model_class, active: str, reason: str) -> None:
    """Three steps on ``model_class`` with only the parameters starting with ``active`` trainable: with prefix reuse
    the step runs in full for ``reason``, and the weights end bitwise as without reuse."""
    weights = []
    for reuse in (True, False):
        torch.manual_seed(0)
        model = model_class().eval()
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(active))
        optimizer = ZOSGD([(n, p) for n, p in model.named_parameters() if p.requires_grad], lr=1e-1, eps=1e-2)
        optimizer.use_engine(StepEngine(ZOConfig(prefix_reuse=reuse), module=model))
        x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
        for _ in range(3):
            optimizer.step(lambda: model(x))
        weights.append(torch.cat([p.flatten() for p in model.parameters()]))
        if reuse:
            assert reason in optimizer.engine.last.prefix.reason
    assert torch.equal(*weights)


class FunctionalGain(torch.nn.Module):
    """Uses a submodule's weight functionally, before the stack, without calling the submodule."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Linear(4, 4)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(3))

    def forward(self, x):
        x = x * self.gain.weight.diagonal()
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return x.pow(2).mean()


def test_a_parameter_used_outside_its_modules_forward_runs_in_full_and_stays_exact():
    fallback_is_exact(FunctionalGain, "gain.", "not used through their modules' forward")


class OutsideResidual(torch.nn.Module):
    """``x = x + layer(x)`` in the parent: a layer's output is not the next layer's input."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(3))
        self.head = torch.nn.Linear(4, 1)

    def forward(self, x):
        for layer in self.layers:
            x = x + torch.tanh(layer(x))
        return self.head(x).pow(2).mean()


@pytest.mark.parametrize("active", ["layers.2.", "head."])
def test_a_residual_added_outside_the_layers_runs_in_full_and_stays_exact(active):
    fallback_is_exact(OutsideResidual, active, "does not go straight into the next module")


class Bystander(torch.nn.Module):
    """A second model in the process: each call records the hooks it can see (its own and torch's global ones)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)
        self.seen: list[int] = []

    def forward(self, x):
        from torch.nn.modules import module as torch_module

        hooks = [torch_module._global_forward_pre_hooks, torch_module._global_forward_hooks]
        hooks += [hook for m in self.modules() for hook in (m._forward_pre_hooks, m._forward_hooks)]
        self.seen.append(sum(len(h) for h in hooks))
        return self.linear(x)


def test_a_second_model_in_the_process_sees_no_hook_during_a_step():
    """Prefix reuse hooks the modules of the model being trained only, and only while it records: another model,
    called inside the objective or beside it, runs with no hook at all."""
    model, loss, optimizer = llama_engine("2")
    bystander = Bystander()
    x = torch.randn(2, 4)

    def objective():
        bystander(x)
        return loss(model)

    optimizer.step(objective)
    assert optimizer.engine.last.prefix.reused_evaluations == 1  # the step did record and reuse
    assert bystander.seen == [0, 0]
