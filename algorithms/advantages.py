"""Advantage estimators: one registry, one signature ``(AdvantageInputs, AdvantageOptions) -> AdvantageOutputs``.

Shapes: B samples, T response tokens. ``token_rewards`` holds the outcome reward at each response's
last valid token plus any per-token penalties; outcome-only estimators use its row sums.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from algorithms.registry import Registry


@dataclass
class AdvantageInputs:
    token_rewards: torch.Tensor  # (B, T) outcome reward at the last valid token + per-token penalties
    response_mask: torch.Tensor  # (B, T) 1 on response tokens
    group_ids: torch.Tensor  # (B,) long, which prompt each sample answers
    values: Optional[torch.Tensor] = None  # (B, T) critic values V(s_t), for gae
    baseline_rewards: Optional[torch.Tensor] = None  # (B,) per-sample baseline reward, for remax


@dataclass(frozen=True)
class AdvantageOptions:
    gamma: float = 1.0  # discount
    lam: float = 1.0  # GAE lambda
    norm_by_std: bool = True  # divide group-centred scores by the group std
    eps: float = 1e-6  # added to a std before dividing


@dataclass
class AdvantageOutputs:
    advantages: torch.Tensor  # (B, T), zero on padding
    returns: torch.Tensor  # (B, T), zero on padding


Estimator = Callable[[AdvantageInputs, AdvantageOptions], AdvantageOutputs]
ESTIMATORS: Registry[Estimator] = Registry("advantage estimator")


def compute_advantages(estimator: str, inputs: AdvantageInputs, **options: float | bool) -> AdvantageOutputs:
    """``ESTIMATORS[estimator](inputs, AdvantageOptions(**options))``; unknown names list the known ones."""
    return ESTIMATORS[estimator](inputs, AdvantageOptions(**options))  # type: ignore[arg-type]


def group_stats(scores: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample (group mean, unbiased group std, group size) of ``scores`` (B,) by ``group_ids`` (B,).

    A group of one has mean 0 and std 1, as in verl, so its sample keeps its raw score.
    """
    _, inverse = torch.unique(group_ids, return_inverse=True)
    groups = int(inverse.max()) + 1 if inverse.numel() else 0
    size = torch.zeros(groups, dtype=scores.dtype).index_add_(0, inverse, torch.ones_like(scores))
    total = torch.zeros(groups, dtype=scores.dtype).index_add_(0, inverse, scores)
    mean = total / size
    sq_dev = torch.zeros(groups, dtype=scores.dtype).index_add_(0, inverse, (scores - mean[inverse]) ** 2)
    std = (sq_dev / (size - 1).clamp(min=1)).sqrt()
    single = size == 1
    mean = torch.where(single, torch.zeros_like(mean), mean)
    std = torch.where(single, torch.ones_like(std), std)
    return mean[inverse], std[inverse], size[inverse]


def _outcome(scores: torch.Tensor, response_mask: torch.Tensor) -> AdvantageOutputs:
    advantages = scores.unsqueeze(-1) * response_mask
    return AdvantageOutputs(advantages=advantages, returns=advantages.clone())


@ESTIMATORS.register("grpo")
def grpo(inputs: AdvantageInputs, opts: AdvantageOptions) -> AdvantageOutputs:
    """Group-relative advantage (GRPO, arXiv 2402.03300, Sec. 4.1.2, outcome supervision).

    A_i = (r_i - mean(r_group)) / (std(r_group) + eps), the same for every token of sample i.
    ``norm_by_std=False`` drops the division (Dr.GRPO, arXiv 2503.20783, Eq. 6). The std is the
    unbiased one, and eps sits outside the square root, as in verl and TRL.
    """
    scores = (inputs.token_rewards * inputs.response_mask).sum(-1)  # (B,)
    mean, std, _ = group_stats(scores, inputs.group_ids)
    centred = scores - mean
    return _outcome(centred / (std + opts.eps) if opts.norm_by_std else centred, inputs.response_mask)


@ESTIMATORS.register("rloo")
def rloo(inputs: AdvantageInputs, opts: AdvantageOptions) -> AdvantageOutputs:
    """REINFORCE leave-one-out (Ahmadian et al., arXiv 2402.14740, Eq. 4).

    A_i = r_i - mean_{j != i} r_j = G/(G-1) (r_i - mean(r_group)) for a group of G samples;
    a group of one keeps its raw reward, as in verl.
    """
    scores = (inputs.token_rewards * inputs.response_mask).sum(-1)
    mean, _, size = group_stats(scores, inputs.group_ids)
    scale = torch.where(size > 1, size / (size - 1).clamp(min=1), torch.ones_like(size))
    return _outcome((scores - mean) * scale, inputs.response_mask)
