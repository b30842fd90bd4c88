"""Layer 1: pure functions and small value objects. Noise streams, directions, the estimate record, update math."""

from zolightning.functional.directions import DenseDirection, TensorDirection
from zolightning.functional.estimate import DirectionalEstimate, evaluate_loss
from zolightning.functional.noise import fill_noise_, mix_seed, sample_noise, stable_key, step_seed, tensor_seed
from zolightning.functional.perturbation import ActiveTensor, PerturbationPlan, perturb_, restore_, snapshot
from zolightning.functional.sgd import zo_sgd_update_

__all__ = [
    "ActiveTensor",
    "DenseDirection",
    "DirectionalEstimate",
    "PerturbationPlan",
    "TensorDirection",
    "evaluate_loss",
    "fill_noise_",
    "mix_seed",
    "perturb_",
    "restore_",
    "sample_noise",
    "snapshot",
    "stable_key",
    "step_seed",
    "tensor_seed",
    "zo_sgd_update_",
]
