"""ZO steps under the Trainer's precision settings (CPU: bf16 autocast, bf16 weights, a 16-mixed GradScaler)."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.plugins.precision import MixedPrecision

from tests.conftest import trainer_kwargs
from tests.test_module import ZORegressor, regression_data


class Recorder(ZORegressor):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.estimates = []

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.estimates.append(self.zo_last_estimate)


def test_the_two_losses_differ_under_bf16_mixed():
    # Autocast caches the bf16 copy of each weight for the whole region; without clearing it after each
    # perturbation, both forwards would see the same weights and every projected gradient would be 0.
    model = Recorder(zo=dict(lr=0.004))
    Trainer(max_steps=5, precision="bf16-mixed", **trainer_kwargs()).fit(model, regression_data())
    assert all(float(e.loss_plus) != float(e.loss_minus) for e in model.estimates)


def test_bf16_mixed_projected_gradients_track_fp32():
    def projected(precision: str) -> torch.Tensor:
        model = Recorder(zo=dict(lr=0.0, eps=1e-2))  # lr 0: every step estimates at the same weights
        Trainer(max_steps=16, precision=precision, **trainer_kwargs()).fit(model, regression_data())
        return torch.tensor([float(e.difference) for e in model.estimates])

    full, half = projected("32-true"), projected("bf16-mixed")
    correlation = torch.corrcoef(torch.stack([full, half]))[0, 1]
    assert correlation > 0.9, float(correlation)


def test_a_16_mixed_grad_scaler_is_disabled_and_training_runs():
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    model = Recorder(zo=dict(lr=0.004))
    trainer = Trainer(max_steps=3, plugins=[plugin], **trainer_kwargs())
    trainer.fit(model, regression_data())
    assert plugin.scaler is None and trainer.global_step == 3


def test_bf16_true_weights_are_restored_exactly_and_warned_about():
    model = Recorder(zo=dict(lr=0.0, eps=1e-2))
    with pytest.warns(UserWarning, match="half precision"):
        Trainer(max_steps=3, precision="bf16-true", **trainer_kwargs()).fit(model, regression_data())
    assert model.net[0].weight.dtype == torch.bfloat16
    reference = Recorder(zo=dict(lr=0.0)).to(torch.bfloat16)
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)  # lr 0: three steps of ±εz left the bf16 weights bit for bit as they were


@pytest.mark.parametrize("mode", ["nearest", "stochastic", "master"])
def test_under_bf16_true_tiny_updates_survive_only_with_stochastic_rounding_or_a_master(mode):
    from zolightning.optim import ZOSGD

    class TinySteps(Recorder):
        def configure_optimizers(self):
            # lr·|g·z| ≈ 1e-6 per step: far below half an ulp of every bf16 weight here.
            return ZOSGD(self.parameters(), lr=1e-7, eps=1e-2, low_precision=mode)

    model = TinySteps()
    reference = TinySteps().to(torch.bfloat16)
    with pytest.warns(UserWarning, match="low_precision"):
        Trainer(max_steps=20, precision="bf16-true", **trainer_kwargs()).fit(model, regression_data())
    unchanged = all(torch.equal(p, q) for p, q in zip(model.parameters(), reference.parameters()))
    assert unchanged == (mode != "stochastic")  # 20 steps of a master's updates are still below an ulp
    if mode == "master":
        state = model.optimizers().optimizer.state
        masters = [state[p]["master"] for p in model.parameters()]
        assert all(m.dtype == torch.float32 for m in masters)
        assert not all(torch.equal(m, q.float()) for m, q in zip(masters, reference.parameters()))


def test_bf16_true_with_default_settings_keeps_tiny_updates():
    from zolightning.optim import ZOSGD

    class Defaults(Recorder):
        def configure_optimizers(self):
            return ZOSGD(self.parameters(), lr=1e-7, eps=1e-2)  # low_precision left at its default

    model = Defaults()
    reference = Defaults().to(torch.bfloat16)
    with pytest.warns(UserWarning, match="stochastic rounding by default"):
        Trainer(max_steps=20, precision="bf16-true", **trainer_kwargs()).fit(model, regression_data())
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), reference.parameters()))


def test_nearest_rounding_of_half_weights_is_warned_about_with_the_fix():
    from zolightning.optim import ZOSGD

    class Nearest(Recorder):
        def configure_optimizers(self):
            return ZOSGD(self.parameters(), lr=1e-7, eps=1e-2, low_precision="nearest")

    with pytest.warns(UserWarning, match="low_precision='stochastic'"):
        Trainer(max_steps=1, precision="bf16-true", **trainer_kwargs()).fit(Nearest(), regression_data())


def test_a_plain_torch_optimizer_on_half_weights_is_warned_about_with_options_it_really_has():
    class Plain(Recorder):
        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    with pytest.warns(UserWarning, match="AdamW writes its updates .* no setting against that.*ZOSGD") as record:
        Trainer(max_steps=1, precision="bf16-true", **trainer_kwargs()).fit(Plain(zo=dict(eps=1e-2)), regression_data())
    assert not any("AdamW" in str(w.message) and "set `low_precision`" in str(w.message) for w in record)


class TwoClassHead(Recorder.__mro__[1]):  # a ZOLightningModule: an MLP body and a new 2-class head, cross-entropy
    def __init__(self, seed: int):
        from zolightning import ZOLightningModule

        ZOLightningModule.__init__(self, zo=dict(seed=seed))
        torch.manual_seed(123)
        self.body = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.LayerNorm(64))
        self.head = torch.nn.Linear(64, 2)
        self.estimates = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.head(self.body(x)), y)  # bf16 logits under bf16-true

    def configure_optimizers(self):
        from zolightning.optim import ZOSGD

        return ZOSGD(self.named_parameters(), lr=1e-3, eps=1e-3)


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_half_precision_losses_resolve_the_step_and_its_projected_gradient_matches_fp32(precision):
    # Regression for shared/cases/precision_step.py: a bf16 loss rounded L+ and L- to the same number (g = 0), and
    # at eps 1e-3 bf16 compute saw only part of the perturbation. A learned head, not a fixed readout, carries the
    # gradient here. The projected gradient is what scales the update: g in half precision over g in fp32.
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 16, generator=generator), torch.randint(0, 2, (32,), generator=generator)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)

    def estimate(seed, precision):
        model = TwoClassHead(seed)
        Trainer(max_steps=1, precision=precision, **trainer_kwargs()).fit(model, data)
        return model.zo_last_estimate, model.zo_engine.last.projected_gradient

    ratios = []
    for seed in range(6):
        (_, full), (half_estimate, half) = estimate(seed, "32-true"), estimate(seed, precision)
        assert float(half_estimate.loss_plus) != float(half_estimate.loss_minus)
        ratios.append(half / full)
    assert sorted(ratios)[len(ratios) // 2] == pytest.approx(1.0, abs=0.25), ratios
    assert all(r > 0 for r in ratios), ratios


def test_an_objective_that_cannot_see_the_step_warns_and_logs_its_tie_share(tmp_path):
    # A piecewise-constant objective (an error rate over a small batch) ties at almost every step: the warning says
    # so, and train/tie_share reads it in TensorBoard.
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    class ErrorRate(Recorder):
        def training_step(self, batch, batch_idx):
            x, y = batch
            return ((self.net(x) > 0).float() != (y > 0).float()).float().mean()

    logger = TensorBoardLogger(tmp_path, name="ties")
    kwargs = {**trainer_kwargs(), "logger": logger, "log_every_n_steps": 1}
    with pytest.warns(UserWarning, match=r"of the last 50 ZO steps measured L\+ = L-"):
        Trainer(max_steps=60, **kwargs).fit(ErrorRate(zo=dict(lr=1e-4, eps=1e-6)), regression_data())
    events = EventAccumulator(str(tmp_path / "ties" / "version_0"))
    events.Reload()
    assert events.Scalars("train/tie_share")[-1].value >= 0.5
