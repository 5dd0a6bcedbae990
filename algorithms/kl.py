"""Per-token KL estimators between the policy and a reference (Schulman, http://joschu.net/blog/kl-approx.html)."""

from __future__ import annotations

from typing import Callable

import torch

from algorithms.registry import Registry

# (logprobs (B, T), ref_logprobs (B, T)) -> (B, T) estimate of KL(pi || pi_ref) per token
KLEstimator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
KL_ESTIMATORS: Registry[KLEstimator] = Registry("KL estimator")


@KL_ESTIMATORS.register("k1")
def k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """log pi - log pi_ref: unbiased, high variance, can be negative."""
    return logprobs - ref_logprobs


@KL_ESTIMATORS.register("k2")
def k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """0.5 (log pi - log pi_ref)^2: biased, low variance, its gradient is the true KL's."""
    return 0.5 * (logprobs - ref_logprobs).square()


@KL_ESTIMATORS.register("k3")
def k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """exp(r) - 1 - r with r = log pi_ref - log pi: unbiased, non-negative (GRPO, arXiv 2402.03300, Eq. 4).

    r is clamped to [-20, 20] before exp, as in verl's ``kl_penalty`` ("low_var_kl"); its result
    is also clamped to [-10, 10] there, which we keep for parity.
    """
    log_ratio = (ref_logprobs - logprobs).clamp(-20.0, 20.0)
    return (log_ratio.exp() - 1.0 - log_ratio).clamp(-10.0, 10.0)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token KL estimate of kind ``k1``, ``k2`` or ``k3``; all tensors (B, T).

    verl calls them ``kl``, ``mse`` and ``low_var_kl`` (``tests/test_parity_verl.py`` checks all three).
    """
    return KL_ESTIMATORS[kind](logprobs, ref_logprobs)
