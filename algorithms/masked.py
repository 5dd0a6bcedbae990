"""Masked reductions and the loss aggregation modes.

A loss is a per-token matrix (B, T) plus a named aggregation. Aggregation divides by the token or
sequence count of the *whole* mini-batch (all micro-batches on all processes) when the caller passes
it, so the gradient does not depend on how the mini-batch was split.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from algorithms.registry import Registry


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is 1, over ``dim`` (all entries when None)."""
    return (values * mask).sum() if dim is None else (values * mask).sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1; 0 where the mask is empty."""
    count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked entries; unbiased variance as in verl and OpenRLHF.

    Masked entries are transformed too (the caller zeroes them if it needs to). With one valid entry
    the variance is taken as 0 (verl raises instead).
    """
    mean = masked_mean(values, mask)
    centered = values - mean
    count = mask.sum()
    var = masked_sum(centered**2, mask) / (count - 1).clamp(min=1)
    whitened = centered * torch.rsqrt(var + eps)
    return whitened if shift_mean else whitened + mean


# (loss_mat (B, T), mask (B, T), num_tokens, num_seqs, max_len) -> scalar
Aggregation = Callable[[torch.Tensor, torch.Tensor, float, float, int], torch.Tensor]
AGGREGATIONS: Registry[Aggregation] = Registry("loss aggregation")


@AGGREGATIONS.register("token-mean")
def token_mean(loss_mat, mask, num_tokens, num_seqs, max_len):
    """Sum over all valid tokens / valid tokens in the mini-batch (DAPO, arXiv 2503.14476, Eq. 8)."""
    return masked_sum(loss_mat, mask) / num_tokens


@AGGREGATIONS.register("token-sum")
def token_sum(loss_mat, mask, num_tokens, num_seqs, max_len):
    """Sum over all valid tokens, no normaliser (verl's ``token-sum``): the gradient grows with the
    number of tokens in the mini-batch. Split invariant as it is, since the trainer undoes
    grad-accumulation and data-parallel averaging (verl multiplies by dp_size for the same reason)."""
    return masked_sum(loss_mat, mask)


@AGGREGATIONS.register("seq-mean-token-mean")
def seq_mean_token_mean(loss_mat, mask, num_tokens, num_seqs, max_len):
    """Mean over sequences of each sequence's token mean (GRPO, arXiv 2402.03300, Eq. 3)."""
    per_seq = masked_sum(loss_mat, mask, dim=-1) / mask.sum(-1).clamp(min=1)
    return per_seq.sum() / num_seqs


@AGGREGATIONS.register("seq-mean-token-sum")
def seq_mean_token_sum(loss_mat, mask, num_tokens, num_seqs, max_len):
    """Mean over sequences of each sequence's token sum."""
    return masked_sum(loss_mat, mask, dim=-1).sum() / num_seqs


@AGGREGATIONS.register("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(loss_mat, mask, num_tokens, num_seqs, max_len):
    """Token sum / a constant length (Dr.GRPO, arXiv 2503.20783, Sec. 3.2): no length bias."""
    return masked_sum(loss_mat, mask) / (num_seqs * max_len)


def aggregate_loss(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    *,
    num_tokens: Optional[float] = None,
    num_seqs: Optional[float] = None,
    max_len: Optional[int] = None,
) -> torch.Tensor:
    """Reduce a (B, T) per-token loss to a scalar by ``mode``.

    ``num_tokens`` / ``num_seqs`` default to this batch's own counts; pass the whole mini-batch's
    counts (summed over micro-batches and processes, times the number of processes when gradients
    are averaged across them) to make the result independent of the split. ``max_len`` defaults to T.

    The default ``num_seqs`` counts every row, as TRL's GRPO loss does; verl's ``agg_loss`` counts only
    rows with at least one valid token. The two agree unless a row is fully masked.
    """
    mask = mask.to(loss_mat.dtype)
    num_tokens = float(mask.sum().clamp(min=1)) if num_tokens is None else num_tokens
    num_seqs = float(mask.shape[0]) if num_seqs is None else num_seqs
    max_len = mask.shape[-1] if max_len is None else max_len
    return AGGREGATIONS[mode](loss_mat, mask, num_tokens, num_seqs, max_len)
