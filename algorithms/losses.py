"""The PPO-clip loss under its own name (the ``ppo`` entry of ``algorithms.policy_losses``) and the critic's value loss."""

from __future__ import annotations

from typing import Optional

import torch

from algorithms.masked import aggregate_loss, masked_mean
from algorithms.policy_losses import compute_policy_loss


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: Optional[float] = None,
    agg: str = "token-mean",
    num_tokens: Optional[float] = None,
    num_seqs: Optional[float] = None,
    max_len: Optional[int] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clip surrogate (arXiv 1707.06347, Eq. 7), all inputs (B, T): ``compute_policy_loss("ppo", ...)``.

    L_t = max(-A_t rho_t, -A_t clip(rho_t, 1 - clip_low, 1 + clip_high)), rho_t = pi / pi_old.
    ``clip_high > clip_low`` is DAPO's clip-higher (arXiv 2503.14476, Eq. 10). ``clip_c`` turns on
    dual-clip for A_t < 0 (arXiv 1912.09729, Eq. 5): the loss is capped at -A_t clip_c.
    Aggregation and its normalisers: see ``algorithms.masked.aggregate_loss``.

    Metrics: ``clipfrac`` (tokens where the clipped term is active), ``clipfrac_lower`` (dual-clip
    active), ``approx_kl`` (mean of log pi_old - log pi, verl's ``ppo_kl``).

    Matches verl's ``compute_policy_loss_vanilla`` and TRL's GRPO loss (``tests/test_parity_*.py``);
    unlike verl, which always dual-clips (``clip_ratio_c`` = 3 by default), dual-clip is off unless
    ``clip_c`` is set, as in TRL.
    """
    return compute_policy_loss(
        "ppo", logprobs, old_logprobs, advantages, response_mask, agg=agg, num_tokens=num_tokens,
        num_seqs=num_seqs, max_len=max_len, clip_low=clip_low, clip_high=clip_high, clip_c=clip_c,
    )


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    clip: Optional[float] = 0.2,
    agg: str = "token-mean",
    num_tokens: Optional[float] = None,
    num_seqs: Optional[float] = None,
    max_len: Optional[int] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss for the PPO critic (arXiv 1707.06347 as in OpenAI baselines ppo2), all (B, T).

    L_t = 0.5 max((V_t - R_t)^2, (clip(V_t, V_old - clip, V_old + clip) - R_t)^2); ``clip=None``
    uses the unclipped term only. verl's ``compute_value_loss`` with the same aggregation.
    Metric ``vf_clipfrac``: tokens where the clipped term is the larger.
    """
    unclipped = (values - returns).square()
    if clip is None:
        loss_mat, clipped = unclipped, unclipped
    else:
        clipped = (old_values + (values - old_values).clamp(-clip, clip) - returns).square()
        loss_mat = torch.maximum(unclipped, clipped)
    mask = response_mask.to(loss_mat.dtype)
    loss = 0.5 * aggregate_loss(loss_mat, mask, agg, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)
    return loss, {"vf_clipfrac": masked_mean((clipped > unclipped).float(), mask).detach()}
