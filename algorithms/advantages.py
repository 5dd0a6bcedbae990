"""Advantage estimators: one registry, one signature ``(AdvantageInputs, AdvantageOptions) -> AdvantageOutputs``.

Shapes: B samples, T response tokens. ``token_rewards`` holds the outcome reward at each response's
last valid token plus any per-token penalties; outcome-only estimators use its row sums over valid
tokens. Every output is zero where ``response_mask`` is 0.

Each estimator is checked against verl's ``verl.trainer.ppo.core_algos`` in ``tests/test_parity_verl.py``.
Where we depart from verl it is on masked positions only: verl leaves whitened values (gae) and
values (gae returns) on padding, we zero them, and we read rewards under the mask only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from algorithms.masked import masked_whiten
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
    gamma: float = 1.0  # discount (gae, reinforce_pp, remax); < 1 favours early tokens, biases the return
    lam: float = 1.0  # GAE lambda (gae): lower trusts the critic more, less variance, more bias
    norm_by_std: bool = True  # grpo: divide group-centred scores by the group std (False: Dr.GRPO)
    eps: float = 1e-6  # grpo: added to the group std before dividing (batch whitening uses 1e-8, as verl)


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


def discounted_returns(token_rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Return-to-go G_t = r_t + gamma G_{t+1} over valid tokens, (B, T) -> (B, T), zero on masked tokens.

    A masked token (padding, or a tool-output span inside a response) neither adds its reward nor
    discounts: G passes through it unchanged, as in verl's REINFORCE++ estimator.
    """
    mask = response_mask.to(token_rewards.dtype)
    returns = torch.zeros_like(token_rewards)
    running = torch.zeros_like(token_rewards[:, 0])
    for t in reversed(range(token_rewards.shape[1])):
        candidate = token_rewards[:, t] + gamma * running
        returns[:, t] = candidate * mask[:, t]
        running = candidate * mask[:, t] + running * (1 - mask[:, t])
    return returns


@ESTIMATORS.register("gae")
def gae(inputs: AdvantageInputs, opts: AdvantageOptions) -> AdvantageOutputs:
    """Generalised advantage estimation for PPO with a critic (Schulman et al., arXiv 1506.02438, Eq. 16).

    delta_t = r_t + gamma V_{t+1} - V_t,  A_t = delta_t + gamma lam A_{t+1},  returns_t = A_t + V_t
    (the critic's regression target), with V after the last token 0. Then A is whitened over all
    valid tokens of the batch, as verl and OpenRLHF do (not in the paper): (A - mean) / sqrt(var + 1e-8),
    unbiased var; ``opts.eps`` is not used. Masked tokens are skipped as in verl (V and A pass through
    them). Shapes: token_rewards, values, response_mask (B, T) -> (B, T).
    Departs from verl only on masked tokens, which are 0 here.
    """
    if inputs.values is None:
        raise ValueError("advantage estimator 'gae' needs critic values: set AdvantageInputs.values (B, T)")
    rewards, values = inputs.token_rewards, inputs.values.to(inputs.token_rewards.dtype)
    mask = inputs.response_mask.to(rewards.dtype)
    advantages = torch.zeros_like(rewards)
    next_value = last_gae = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + opts.gamma * next_value - values[:, t]
        candidate = delta + opts.gamma * opts.lam * last_gae
        next_value = values[:, t] * mask[:, t] + next_value * (1 - mask[:, t])
        last_gae = candidate * mask[:, t] + last_gae * (1 - mask[:, t])
        advantages[:, t] = last_gae
    returns = (advantages + values) * mask
    return AdvantageOutputs(advantages=masked_whiten(advantages, mask) * mask, returns=returns)


@ESTIMATORS.register("reinforce_pp")
def reinforce_pp(inputs: AdvantageInputs, opts: AdvantageOptions) -> AdvantageOutputs:
    """REINFORCE++ (Hu et al., arXiv 2501.03262): discounted return-to-go, globally normalised.

    G_t = sum_{s >= t} gamma^(s-t) r_s, where r_s already holds the outcome reward at the last token
    and any per-token KL penalty the caller folded in (the paper's r_t - beta KL_t);
    A_t = (G_t - mean(G)) / sqrt(var(G) + 1e-8) over all valid tokens of the batch (the paper's
    global advantage normalisation; 1e-8 and the unbiased var as in verl and OpenRLHF).
    returns = G. Shapes: (B, T) -> (B, T). Same as verl's ``compute_reinforce_plus_plus_outcome_advantage``.
    """
    mask = inputs.response_mask.to(inputs.token_rewards.dtype)
    returns = discounted_returns(inputs.token_rewards, mask, opts.gamma)
    return AdvantageOutputs(advantages=masked_whiten(returns, mask) * mask, returns=returns)


@ESTIMATORS.register("reinforce_pp_baseline")
def reinforce_pp_baseline(inputs: AdvantageInputs, opts: AdvantageOptions) -> AdvantageOutputs:
    """REINFORCE++-baseline (arXiv 2501.03262): group-mean baseline, then batch whitening.

    A_i = s_i - mean(s_group) with s_i the sample's summed reward (a group of one keeps s_i), put
    on every valid token and whitened over all valid tokens of the batch: (A - mean) / sqrt(var + 1e-8).
    returns = advantages. Shapes: (B, T) -> (B, T). Same as verl's
    ``compute_reinforce_plus_plus_baseline_outcome_advantage`` (gamma and ``opts.eps`` unused, as there).
    """
    mask = inputs.response_mask.to(inputs.token_rewards.dtype)
    scores = (inputs.token_rewards * mask).sum(-1)
    mean, _, _ = group_stats(scores, inputs.group_ids)
    advantages = masked_whiten((scores - mean).unsqueeze(-1) * mask, mask) * mask
    return AdvantageOutputs(advantages=advantages, returns=advantages.clone())


@ESTIMATORS.register("remax")
def remax(inputs: AdvantageInputs, opts: AdvantageOptions) -> AdvantageOutputs:
    """ReMax (Li et al., arXiv 2310.10505, Alg. 1): the greedy rollout's reward as baseline.

    A_t = G_t - b, G_t the return-to-go of the token rewards (``discounted_returns``) and b =
    ``baseline_rewards`` (B,), the reward of one greedy rollout of the sample's prompt. No whitening.
    returns = G. Shapes: (B, T), (B,) -> (B, T). Same as verl's ``compute_remax_outcome_advantage``
    at gamma = 1 (the paper's and our default); verl ignores gamma, we discount by it.
    """
    if inputs.baseline_rewards is None:
        raise ValueError(
            "advantage estimator 'remax' needs AdvantageInputs.baseline_rewards (B,): "
            "the reward of one greedy rollout of each sample's prompt"
        )
    mask = inputs.response_mask.to(inputs.token_rewards.dtype)
    returns = discounted_returns(inputs.token_rewards, mask, opts.gamma)
    baseline = inputs.baseline_rewards.to(returns.dtype).unsqueeze(-1)
    return AdvantageOutputs(advantages=(returns - baseline) * mask, returns=returns)


@ESTIMATORS.register("grpo_passk")
def grpo_passk(inputs: AdvantageInputs, opts: AdvantageOptions) -> AdvantageOutputs:
    """Pass@k advantage: only each group's best sample is pushed (verl's ``grpo_passk``, after arXiv 2503.19595).

    For a group with scores r, the sample holding max(r) gets A = (r_max - r_second) / (std(r) + eps)
    (the division only with ``norm_by_std``; unbiased std); every other sample gets 0. With binary
    rewards a group is rewarded only when exactly one sample solves it, so the policy is paid for
    covering problems, not for solving the same ones more often (pass@k, not pass@1). Ties at the
    top give 0, whichever sample holds it. Groups need at least two samples.
    Shapes: (B, T) -> (B, T). Same as verl's ``compute_grpo_passk_outcome_advantage``.
    """
    scores = (inputs.token_rewards * inputs.response_mask).sum(-1)
    _, inverse = torch.unique(inputs.group_ids, return_inverse=True)
    groups = int(inverse.max()) + 1 if inverse.numel() else 0
    size = torch.zeros(groups, dtype=torch.long).index_add_(0, inverse, torch.ones_like(inverse))
    if bool((size < 2).any()):
        raise ValueError("advantage estimator 'grpo_passk' needs at least 2 samples per prompt: "
                         "set algorithm.samples_per_prompt >= 2")
    top = torch.full((groups,), -torch.inf, dtype=scores.dtype).scatter_reduce(0, inverse, scores, "amax")
    is_top = scores == top[inverse]
    top_count = torch.zeros(groups, dtype=torch.long).index_add_(0, inverse, is_top.long())
    second = torch.full((groups,), -torch.inf, dtype=scores.dtype).scatter_reduce(
        0, inverse, torch.where(is_top, torch.full_like(scores, -torch.inf), scores), "amax")
    gap = torch.where(top_count > 1, torch.zeros_like(top), top - second)  # a tie at the top: no gap
    if opts.norm_by_std:
        _, std, _ = group_stats(scores, inputs.group_ids)
        gap = gap[inverse] / (std + opts.eps)
    else:
        gap = gap[inverse]
    first_top = is_top & (top_count[inverse] == 1)  # the one best sample, where there is one
    return _outcome(torch.where(first_top, gap, torch.zeros_like(gap)), inputs.response_mask)


@ESTIMATORS.register("opo")
def opo(inputs: AdvantageInputs, opts: AdvantageOptions) -> AdvantageOutputs:
    """On-policy RL with the optimal reward baseline (OPO, arXiv 2505.23585, Eq. 5).

    A_i = r_i - b, b = sum_j |y_j| r_j / sum_j |y_j| over the sample's group: the length-weighted mean
    reward, the variance-minimising baseline when the gradient norm grows with length. A group of one
    has b = 0, as in verl. No std division. Shapes: (B, T) -> (B, T).
    Same as verl's ``compute_opo_outcome_advantage``.
    """
    mask = inputs.response_mask.to(inputs.token_rewards.dtype)
    scores = (inputs.token_rewards * mask).sum(-1)
    lengths = mask.sum(-1)
    _, inverse = torch.unique(inputs.group_ids, return_inverse=True)
    groups = int(inverse.max()) + 1 if inverse.numel() else 0
    weighted = torch.zeros(groups, dtype=scores.dtype).index_add_(0, inverse, lengths * scores)
    total = torch.zeros(groups, dtype=scores.dtype).index_add_(0, inverse, lengths)
    size = torch.zeros(groups, dtype=scores.dtype).index_add_(0, inverse, torch.ones_like(scores))
    baseline = torch.where(size > 1, weighted / total, torch.zeros_like(total))
    return _outcome(scores - baseline[inverse], inputs.response_mask)


@ESTIMATORS.register("gpg")
def gpg(inputs: AdvantageInputs, opts: AdvantageOptions) -> AdvantageOutputs:
    """Group Policy Gradient (GPG, arXiv 2504.02546, Eq. 7 and 9).

    A_i = alpha (r_i - mean(r_group)), alpha = B / (number of samples with non-zero reward), at least
    B / 1: the group-centred reward scaled up when few samples score, which undoes the shrinking of the
    gradient by groups that carry no signal. No std division (GPG's F_norm = 1). A group of one keeps
    its raw reward. alpha is taken over the batch this call sees (one process's share under data
    parallelism, as each of verl's workers would if it computed advantages).
    Shapes: (B, T) -> (B, T). Same as verl's ``compute_gpg_outcome_advantage``.
    """
    scores = (inputs.token_rewards * inputs.response_mask).sum(-1)
    mean, _, _ = group_stats(scores, inputs.group_ids)
    alpha = scores.numel() / max(int(torch.count_nonzero(scores)), 1)
    return _outcome(alpha * (scores - mean), inputs.response_mask)
