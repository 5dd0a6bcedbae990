"""Pure RL math over tensors: advantage estimators, policy losses, KL estimators, aggregation,
rollout correction.

torch only; no I/O, no distributed code, nothing from ``train`` or ``eval``.
"""

from algorithms.advantages import (
    ESTIMATORS,
    AdvantageInputs,
    AdvantageOptions,
    AdvantageOutputs,
    compute_advantages,
)
from algorithms.batch import Rollouts, ScoredRollouts, TrainBatch
from algorithms.filters import informative_groups, overlong_penalty
from algorithms.kl import KL_ESTIMATORS, kl_penalty
from algorithms.losses import policy_loss, value_loss
from algorithms.masked import AGGREGATIONS, aggregate_loss, masked_mean, masked_whiten
from algorithms.policy_losses import POLICY_LOSSES, PolicyLossInputs, compute_policy_loss, policy_loss_options
from algorithms.registry import Registry
from algorithms.rollout_correction import (
    IS_LEVELS,
    REJECTION_MODES,
    rollout_correction,
    rollout_mismatch_metrics,
)

__all__ = [
    "AGGREGATIONS",
    "ESTIMATORS",
    "IS_LEVELS",
    "KL_ESTIMATORS",
    "POLICY_LOSSES",
    "REJECTION_MODES",
    "AdvantageInputs",
    "AdvantageOptions",
    "AdvantageOutputs",
    "PolicyLossInputs",
    "Registry",
    "Rollouts",
    "ScoredRollouts",
    "TrainBatch",
    "aggregate_loss",
    "compute_advantages",
    "compute_policy_loss",
    "informative_groups",
    "kl_penalty",
    "overlong_penalty",
    "masked_mean",
    "masked_whiten",
    "policy_loss",
    "policy_loss_options",
    "rollout_correction",
    "rollout_mismatch_metrics",
    "value_loss",
]
