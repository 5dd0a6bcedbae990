"""Policy losses: one registry, one signature ``(PolicyLossInputs, **options) -> (loss_mat, metrics)``.

A policy loss is a per-token loss matrix (B, T) plus a named aggregation (``algorithms.masked``).
Each entry returns the matrix, already multiplied by the rollout-correction weights, and a dict of
metrics; ``compute_policy_loss`` aggregates the matrix with the whole mini-batch's normalisers, so
the gradient does not depend on how the mini-batch was split into micro-batches, except for the
entries whose token choice depends on the batch they see (``clip_cov``, ``kl_cov``; verl also
chooses per micro-batch).

An entry's options are its keyword-only arguments, defaults there and nowhere else;
``policy_loss_options(name)`` lists them, and an option the entry does not take is an error.

Metric names: ``clipfrac``, ``clipfrac_lower`` and ``approx_kl`` for what verl reports as
``actor/pg_clipfrac``, ``actor/pg_clipfrac_lower`` and ``actor/ppo_kl``. Where verl reports a
constant 0 "for compatibility" (sapo's clip fractions, gspo's and cispo's ``pg_clipfrac_lower``) the
metric is left out.

Every entry equals verl 0.9.1's ``verl.trainer.ppo.core_algos`` loss of the same name (``vanilla``
for ``ppo``, ``geo_mean`` for ``gmpo``), checked in ``tests/test_policy_losses.py``; each docstring
says where it departs from verl or the paper.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from algorithms.masked import aggregate_loss, masked_mean
from algorithms.registry import Registry


@dataclass(frozen=True)
class PolicyLossInputs:
    logprobs: torch.Tensor  # (B, T) log pi_theta of the sampled tokens; carries the gradient
    old_logprobs: torch.Tensor  # (B, T) log pi_old, the policy the rollouts are scored for
    advantages: torch.Tensor  # (B, T)
    response_mask: torch.Tensor  # (B, T) float, 1 on tokens in the loss
    rollout_is_weights: Optional[torch.Tensor] = None  # (B, T) rollout-correction IS weights, no gradient
    generator: Optional[torch.Generator] = None  # seeds the random token choice (clip_cov)


Metrics = dict[str, torch.Tensor]
PolicyLoss = Callable[..., tuple[torch.Tensor, Metrics]]  # (PolicyLossInputs, **options) -> ((B, T), metrics)
POLICY_LOSSES: Registry[PolicyLoss] = Registry("policy loss")


def policy_loss_options(name: str) -> dict[str, Any]:
    """The options policy loss ``name`` takes, with their defaults (its keyword-only arguments)."""
    params = inspect.signature(POLICY_LOSSES[name]).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def compute_policy_loss(
    name: str,
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    agg: str = "token-mean",
    rollout_is_weights: Optional[torch.Tensor] = None,
    num_tokens: Optional[float] = None,
    num_seqs: Optional[float] = None,
    max_len: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    **options: Any,
) -> tuple[torch.Tensor, Metrics]:
    """(scalar loss, detached scalar metrics) of policy loss ``name``; all tensors (B, T).

    ``rollout_is_weights`` multiply the per-token losses (gmpo: per sample, see there). Aggregation
    ``agg`` and the normalisers ``num_tokens`` / ``num_seqs`` / ``max_len``: see
    ``algorithms.masked.aggregate_loss``. ``options`` are the loss's own (``policy_loss_options``).
    """
    known = policy_loss_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        takes = ", ".join(f"{k}={v!r}" for k, v in known.items()) or "no options"
        raise ValueError(f"policy loss {name!r} has no option {', '.join(unknown)}; it takes: {takes}")
    mask = response_mask.to(logprobs.dtype)
    inputs = PolicyLossInputs(logprobs, old_logprobs, advantages, mask, rollout_is_weights, generator)
    loss_mat, metrics = POLICY_LOSSES[name](inputs, **options)
    loss = aggregate_loss(loss_mat, mask, agg, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)
    return loss, {key: value.detach() for key, value in metrics.items()}


def _log_ratio(inputs: PolicyLossInputs, clamp: bool = True) -> torch.Tensor:
    """log pi - log pi_old, (B, T); clamped to [-20, 20] before exp where verl clamps it."""
    log_ratio = inputs.logprobs - inputs.old_logprobs
    return log_ratio.clamp(-20.0, 20.0) if clamp else log_ratio


def _mean(values: torch.Tensor, inputs: PolicyLossInputs) -> torch.Tensor:
    """Detached mean of ``values`` (bool or float, (B, T)) over the valid tokens."""
    mask = inputs.response_mask
    return masked_mean(values.detach().to(mask.dtype), mask)


def _weighted(loss_mat: torch.Tensor, inputs: PolicyLossInputs) -> torch.Tensor:
    weights = inputs.rollout_is_weights
    return loss_mat if weights is None else loss_mat * weights


@POLICY_LOSSES.register("ppo")
def ppo(
    inputs: PolicyLossInputs, *, clip_low: float = 0.2, clip_high: float = 0.2, clip_c: Optional[float] = None
) -> tuple[torch.Tensor, Metrics]:
    """PPO-clip (arXiv 1707.06347, Eq. 7), with clip-higher and dual-clip.

    L_t = max(-A_t r_t, -A_t clip(r_t, 1 - clip_low, 1 + clip_high)), r_t = exp(clamp(log pi -
    log pi_old, -20, 20)). ``clip_high > clip_low`` is DAPO's clip-higher (arXiv 2503.14476, Eq. 10);
    ``clip_c`` caps the loss at -A_t clip_c where A_t < 0 (dual-clip, arXiv 1912.09729, Eq. 5).
    The numbers of ``algorithms.losses.policy_loss``. verl's ``vanilla`` always dual-clips
    (clip_ratio_c = 3); here only when ``clip_c`` is set, as in TRL.
    Metrics: clipfrac (clipped term active), clipfrac_lower (dual-clip active), approx_kl.
    """
    log_ratio = _log_ratio(inputs)
    ratio, advantages = log_ratio.exp(), inputs.advantages
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss_mat = torch.maximum(unclipped, clipped)
    dual_active = torch.zeros_like(loss_mat, dtype=torch.bool)
    if clip_c is not None:
        cap = -advantages * clip_c
        dual_active = (loss_mat > cap) & (advantages < 0)
        loss_mat = torch.where(advantages < 0, torch.minimum(loss_mat, cap), loss_mat)
    metrics = {
        "clipfrac": _mean(clipped > unclipped, inputs),
        "clipfrac_lower": _mean(dual_active, inputs),
        "approx_kl": _mean(-log_ratio, inputs),
    }
    return _weighted(loss_mat, inputs), metrics


@POLICY_LOSSES.register("gspo")
def gspo(inputs: PolicyLossInputs, *, clip_low: float = 0.2, clip_high: float = 0.2) -> tuple[torch.Tensor, Metrics]:
    """Group Sequence Policy Optimization, its token form GSPO-token (arXiv 2507.18071).

    s_i = exp(mean_t (log pi - log pi_old)) over sample i's valid tokens is the sequence ratio; each
    token uses s_it = sg[s_i] pi_t / sg[pi_t] (value s_i, gradient s_i grad log pi_t), log s_it capped
    at 10 as in verl. L_t = max(-A_t s_it, -A_t clip(s_it, 1 - clip_low, 1 + clip_high)).
    Shapes (B, T) -> (B, T). The paper clips at (3e-4, 4e-4) and averages per sequence
    (seq-mean-token-mean); the defaults here are verl's (0.2, 0.2) and the aggregation is the
    caller's, as in verl. Metrics: clipfrac, approx_kl (log-ratio not clamped).
    """
    mask, logprobs, advantages = inputs.response_mask, inputs.logprobs, inputs.advantages
    log_ratio = _log_ratio(inputs, clamp=False)
    seq_log_ratio = (log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (B,)
    log_s = (logprobs - logprobs.detach() + seq_log_ratio.detach().unsqueeze(-1)).clamp(max=10.0)
    s = log_s.exp()
    unclipped = -advantages * s
    clipped = -advantages * s.clamp(1.0 - clip_low, 1.0 + clip_high)
    metrics = {"clipfrac": _mean(clipped > unclipped, inputs), "approx_kl": _mean(-log_ratio, inputs)}
    return _weighted(torch.maximum(unclipped, clipped), inputs), metrics


@POLICY_LOSSES.register("cispo")
def cispo(inputs: PolicyLossInputs, *, clip_low: float = 0.2, clip_high: float = 0.2) -> tuple[torch.Tensor, Metrics]:
    """Clipped IS-weight Policy Optimization (MiniMax-M1, arXiv 2506.13585).

    L_t = -sg[clip(r_t, 1 - clip_low, 1 + clip_high)] A_t log pi_t, r_t as in ``ppo``: the IS weight
    is clipped, never the gradient, so every token keeps one. Shapes (B, T) -> (B, T).
    The paper sets no lower bound in practice (a large clip_low); defaults are verl's (0.2, 0.2).
    Metrics: clipfrac (r_t outside the clip range), approx_kl.
    """
    log_ratio = _log_ratio(inputs)
    ratio = log_ratio.exp()
    clipped_ratio = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss_mat = -clipped_ratio.detach() * inputs.advantages * inputs.logprobs
    metrics = {"clipfrac": _mean(ratio != clipped_ratio, inputs), "approx_kl": _mean(-log_ratio, inputs)}
    return _weighted(loss_mat, inputs), metrics


@POLICY_LOSSES.register("sapo")
def sapo(inputs: PolicyLossInputs, *, tau_pos: float = 1.0, tau_neg: float = 1.05) -> tuple[torch.Tensor, Metrics]:
    """Soft Adaptive Policy Optimization (arXiv 2511.20347): a smooth gate instead of a hard clip.

    L_t = -f(r_t) A_t, f(r) = sigmoid(tau (r - 1)) 4 / tau, tau = tau_pos where A_t > 0 else tau_neg,
    r_t as in ``ppo``. f'(1) = 1, so near r = 1 the gradient is the unclipped one; it fades smoothly
    (faster for larger tau) as r leaves 1. Shapes (B, T) -> (B, T).
    verl always aggregates seq-mean-token-mean (the paper's) whatever ``loss_agg_mode`` says; here
    the caller's ``agg`` applies, so set it to seq-mean-token-mean for the paper's objective.
    Metrics: approx_kl.
    """
    log_ratio = _log_ratio(inputs)
    advantages = inputs.advantages
    tau = torch.where(advantages > 0, torch.full_like(advantages, tau_pos), torch.full_like(advantages, tau_neg))
    gate = torch.sigmoid(tau * (log_ratio.exp() - 1.0)) * (4.0 / tau)
    return _weighted(-gate * advantages, inputs), {"approx_kl": _mean(-log_ratio, inputs)}


@POLICY_LOSSES.register("gmpo")
def gmpo(inputs: PolicyLossInputs, *, clip_low: float = 0.2, clip_high: float = 0.2) -> tuple[torch.Tensor, Metrics]:
    """Geometric-Mean Policy Optimization (arXiv 2507.20673; verl's ``geo_mean``).

    d_t = log pi_t - log pi_old,t (not clamped), clipped per token in log space towards the
    advantage's side: l_t = sgn(A_t) min(sgn(A_t) d_t, sgn(A_t) clip(d_t, -clip_low, clip_high)).
    L_i = -Abar_i exp(mean_t l_t) with Abar_i = mean_t A_t, means over sample i's valid tokens; each
    valid token of row i carries L_i, so seq-mean-token-mean gives the paper's (1/G) sum_i L_i
    (other modes weight samples by length, as verl's gspo does). IS weights enter per sample as
    their geometric mean exp(mean_t log(w_t + 1e-10)), as in verl. Shapes (B, T) -> (B, T).
    Departures: verl ignores ``loss_agg_mode`` and the global normalisers (a plain mean over the
    micro-batch's rows, so its sum over micro-batches depends on the split); ours aggregates like
    every loss. The paper clips at (0.4, 0.4); defaults are verl's (0.2, 0.2).
    Metrics: clipfrac / clipfrac_lower (d_t clipped where A_t > 0 / A_t < 0), approx_kl.
    """
    mask, advantages = inputs.response_mask, inputs.advantages
    log_ratio = _log_ratio(inputs, clamp=False)
    sign = torch.sign(advantages)
    clamped = log_ratio.clamp(-clip_low, clip_high)
    kept = sign * torch.minimum(sign * log_ratio, sign * clamped)
    length = mask.sum(-1) + 1e-8
    seq_loss = -(advantages * mask).sum(-1) / length * torch.exp((kept * mask).sum(-1) / length)  # (B,)
    if inputs.rollout_is_weights is not None:
        seq_loss = seq_loss * torch.exp((torch.log(inputs.rollout_is_weights + 1e-10) * mask).sum(-1) / length)
    clipped = log_ratio != clamped
    metrics = {
        "clipfrac": _mean(clipped & (advantages > 0), inputs),
        "clipfrac_lower": _mean(clipped & (advantages < 0), inputs),
        "approx_kl": _mean(-log_ratio, inputs),
    }
    return seq_loss.unsqueeze(-1).expand_as(mask), metrics


def _token_cov(inputs: PolicyLossInputs) -> torch.Tensor:
    """(A_t - mean A)(log pi_t - mean log pi), means over the batch's valid tokens, (B, T), no gradient."""
    mask, logprobs = inputs.response_mask, inputs.logprobs.detach()
    return (inputs.advantages - masked_mean(inputs.advantages, mask)) * (logprobs - masked_mean(logprobs, mask))


def _random_subset(candidates: torch.Tensor, count: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """``count`` of the True entries of ``candidates`` (B, T) (all of them when fewer), uniformly at random.

    The first ``count`` of a random permutation of the candidates in row-major order, as verl draws
    them: a CPU generator seeded like ``torch.manual_seed`` before verl's call picks the same tokens.
    """
    index = candidates.nonzero()  # (N, 2)
    chosen = torch.zeros_like(candidates)
    if len(index):
        device = generator.device if generator is not None else torch.device("cpu")
        pick = index[torch.randperm(len(index), generator=generator, device=device)[:count].to(index.device)]
        chosen[pick[:, 0], pick[:, 1]] = True
    return chosen


@POLICY_LOSSES.register("clip_cov")
def clip_cov(
    inputs: PolicyLossInputs,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_cov_ratio: float = 0.0002,
    clip_cov_lb: float = 1.0,
    clip_cov_ub: float = 5.0,
) -> tuple[torch.Tensor, Metrics]:
    """Clip-Cov (The Entropy Mechanism of RL for Reasoning LMs, arXiv 2505.22617).

    L_t = max(-A_t r_t, -A_t clip(r_t, 1 - clip_low, 1 + clip_high)), r_t = pi / pi_old (not
    clamped, no dual-clip, as in verl), except that max(1, floor(clip_cov_ratio * valid tokens))
    tokens, drawn at random (``inputs.generator``) among those with clip_cov_lb < cov_t < clip_cov_ub
    (``_token_cov``) that the ratio clip has not already clipped, get no loss and no gradient: the
    high-covariance tokens that drive entropy down. Shapes (B, T) -> (B, T).
    The choice depends on the whole batch passed in, so micro-batches do not sum to the whole
    batch's loss; verl also chooses per micro-batch.
    Metrics: clipfrac (tokens cut, verl's pg_clipfrac), approx_kl (log-ratio not clamped).
    """
    if clip_cov_ratio <= 0:
        raise ValueError(f"clip_cov: clip_cov_ratio={clip_cov_ratio} must be > 0 (the share of tokens cut)")
    mask, advantages = inputs.response_mask, inputs.advantages
    log_ratio = _log_ratio(inputs, clamp=False)
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    cov = _token_cov(inputs)
    eligible = (mask > 0) & ~(clipped > unclipped) & (cov > clip_cov_lb) & (cov < clip_cov_ub)
    cut = _random_subset(eligible, max(int(clip_cov_ratio * float(mask.sum())), 1), inputs.generator)
    loss_mat = torch.maximum(unclipped, clipped) * (~cut).to(mask.dtype)
    metrics = {"clipfrac": _mean(cut, inputs), "approx_kl": _mean(-log_ratio, inputs)}
    return _weighted(loss_mat, inputs), metrics


@POLICY_LOSSES.register("kl_cov")
def kl_cov(
    inputs: PolicyLossInputs, *, kl_cov_ratio: float = 0.0002, ppo_kl_coef: float = 0.1
) -> tuple[torch.Tensor, Metrics]:
    """KL-Cov (The Entropy Mechanism of RL for Reasoning LMs, arXiv 2505.22617).

    L_t = -A_t r_t, r_t = pi / pi_old (not clamped, no clip), plus ppo_kl_coef |log r_t| on the
    max(1, floor(kl_cov_ratio * n)) valid tokens of largest cov_t (n valid tokens; cov_t as in
    ``clip_cov``). Shapes (B, T) -> (B, T). The top-k is over the batch passed in, so micro-batches
    do not sum to the whole batch's loss; verl also picks per micro-batch.
    Metrics: approx_kl = mean |log r_t| (what verl reports as ppo_kl for this loss).
    """
    if kl_cov_ratio <= 0:
        raise ValueError(f"kl_cov: kl_cov_ratio={kl_cov_ratio} must be > 0 (the share of tokens penalised)")
    valid = inputs.response_mask > 0
    log_ratio = _log_ratio(inputs, clamp=False)
    unclipped = -inputs.advantages * log_ratio.exp()
    advantages, logprobs = inputs.advantages.detach()[valid], inputs.logprobs.detach()[valid]  # (n,) row-major
    top = torch.zeros_like(valid)
    if advantages.numel():
        cov = (advantages - advantages.mean()) * (logprobs - logprobs.mean())
        largest = torch.topk(cov, max(1, int(cov.numel() * kl_cov_ratio))).indices
        top.view(-1)[valid.view(-1).nonzero().squeeze(-1)[largest]] = True
    loss_mat = torch.where(top, unclipped + ppo_kl_coef * log_ratio.abs(), unclipped)
    return _weighted(loss_mat, inputs), {"approx_kl": _mean(log_ratio.abs(), inputs)}


@POLICY_LOSSES.register("gpg")
def gpg(inputs: PolicyLossInputs) -> tuple[torch.Tensor, Metrics]:
    """Group Policy Gradient (arXiv 2504.02546): the plain policy gradient, L_t = -A_t log pi_t.

    No ratio and no clip, so it is on-policy (``old_logprobs`` is unused); pair it with the ``gpg``
    advantage estimator. Shapes (B, T) -> (B, T). No metrics (verl reports none).
    """
    return _weighted(-inputs.advantages * inputs.logprobs, inputs), {}


def _dppo(inputs: PolicyLossInputs, keep: torch.Tensor, clip_c: Optional[float]) -> tuple[torch.Tensor, Metrics]:
    """L_t = -A_t sg[min(r_t, clip_c)] log pi_t on the tokens ``keep`` (B, T) lets through, 0 elsewhere."""
    log_ratio = _log_ratio(inputs)
    ratio = log_ratio.exp()
    truncated = torch.zeros_like(keep) if clip_c is None else ratio > clip_c
    weight = ratio if clip_c is None else ratio.clamp(max=clip_c)
    keep = keep.detach().to(ratio.dtype)
    loss_mat = -inputs.advantages * weight.detach() * inputs.logprobs * keep
    metrics = {
        "clipfrac": _mean(1.0 - keep, inputs),
        "clipfrac_lower": _mean(truncated * keep, inputs),
        "approx_kl": _mean(-log_ratio, inputs),
    }
    return _weighted(loss_mat, inputs), metrics


@POLICY_LOSSES.register("dppo_tv")
def dppo_tv(
    inputs: PolicyLossInputs, *, clip_low: float = 0.2, clip_high: float = 0.2, clip_c: Optional[float] = 3.0
) -> tuple[torch.Tensor, Metrics]:
    """DPPO-Binary-TV (Rethinking the Trust Region in LLM RL, arXiv 2602.04879): a trust region on
    the sampled token's probability change instead of on the ratio.

    Token t is dropped when the update already moved it too far the advantage's way: A_t > 0 and
    p_t - p_old,t > clip_high, or A_t <= 0 and p_t - p_old,t < -clip_low (p = exp log pi). Kept tokens:
    L_t = -A_t sg[min(r_t, clip_c)] log pi_t, r_t as in ``ppo``, whose gradient is the unclipped
    surrogate's with the IS ratio truncated at ``clip_c`` (None: not truncated); the loss value is not
    the surrogate's. Shapes (B, T) -> (B, T). Defaults are verl's ActorConfig (0.2, 0.2, 3.0); verl's
    DPPO example uses TV thresholds 0.15 and clip_c 1e4 (no truncation).
    Metrics: clipfrac (tokens dropped), clipfrac_lower (kept tokens whose ratio is truncated), approx_kl.
    """
    change = inputs.logprobs.exp() - inputs.old_logprobs.exp()
    keep = torch.where(inputs.advantages > 0, change <= clip_high, change >= -clip_low)
    return _dppo(inputs, keep, clip_c)


@POLICY_LOSSES.register("dppo_kl")
def dppo_kl(
    inputs: PolicyLossInputs, *, clip_low: float = 0.2, clip_high: float = 0.2, clip_c: Optional[float] = 3.0
) -> tuple[torch.Tensor, Metrics]:
    """DPPO-Binary-KL (arXiv 2602.04879): ``dppo_tv`` with the binary KL as the divergence.

    D_t = p_old log(p_old / p) + (1 - p_old) log((1 - p_old + 1e-8) / (1 - p + 1e-8)), the KL between
    Bernoulli(p_old,t) and Bernoulli(p_t). Token t is dropped when A_t > 0, p_t > p_old,t and
    D_t > clip_high, or A_t <= 0, p_t < p_old,t and D_t > clip_low; the loss on kept tokens is
    ``dppo_tv``'s. Shapes (B, T) -> (B, T). Defaults are verl's ActorConfig (0.2, 0.2, 3.0); verl's
    DPPO example uses KL thresholds 0.05 and clip_c 1e4. Metrics as ``dppo_tv``.
    """
    old_logprobs, logprobs = inputs.old_logprobs, inputs.logprobs.detach()
    prob, old_prob = logprobs.exp(), old_logprobs.exp()
    binary_kl = old_prob * (old_logprobs - logprobs) + (1 - old_prob) * torch.log(
        (1.0 - old_prob + 1e-8) / (1.0 - prob + 1e-8)
    )
    keep_positive = (binary_kl <= clip_high) | (prob <= old_prob)
    keep_negative = (binary_kl <= clip_low) | (prob >= old_prob)
    return _dppo(inputs, torch.where(inputs.advantages > 0, keep_positive, keep_negative), clip_c)
