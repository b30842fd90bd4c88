"""Layer 1: pure functions and small value objects. Noise streams, directions, structures, estimators, updates."""

from zolightning.functional.directions import DenseDirection, TensorDirection
from zolightning.functional.estimators import (
    TwoPointEstimate,
    accumulate_gradient_,
    evaluate_loss,
    two_point_estimate,
)
from zolightning.functional.noise import fill_noise_, mix_seed, sample_noise, stable_key, step_seed, tensor_seed
from zolightning.functional.perturbation import ActiveTensor, PerturbationPlan, perturb_, plan_numel, restore_, snapshot
from zolightning.functional.sgd import zo_sgd_update_
from zolightning.functional.structure import PerturbationStructure, TrainableTensor, dense_structure

__all__ = [
    "ActiveTensor",
    "DenseDirection",
    "dense_structure",
    "PerturbationPlan",
    "PerturbationStructure",
    "TensorDirection",
    "TrainableTensor",
    "TwoPointEstimate",
    "accumulate_gradient_",
    "evaluate_loss",
    "fill_noise_",
    "mix_seed",
    "perturb_",
    "plan_numel",
    "restore_",
    "sample_noise",
    "snapshot",
    "stable_key",
    "step_seed",
    "tensor_seed",
    "two_point_estimate",
    "zo_sgd_update_",
]
