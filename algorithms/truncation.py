"""The sampler's truncated distribution, replayed by the trainer: top-k and nucleus (top-p) masks.

With ``top_k`` or ``top_p`` < 1 the rollout engine does not sample from softmax(logits / T) but from
that distribution cut to its top-k tokens, then to the smallest set of most likely tokens whose
probability reaches ``top_p``, and renormalised. The trainer has to score sampled tokens under the
same cut distribution, or pi / pi_old is not 1 at the first update even with identical weights
(TRL #6789; vLLM reports the cut distribution's log-probs).

The masks follow transformers' ``TopKLogitsWarper`` then ``TopPLogitsWarper`` (the order
``generate`` applies them) and vLLM's ``apply_top_k_top_p``: ties at the k-th logit are kept; a token
is cut by top-p when the cumulative probability of the tokens below it (ascending order) is at
most 1 - top_p; the most likely token is always kept. ``tests/test_truncation.py`` checks both.
"""

from __future__ import annotations

from typing import Optional

import torch


def truncation_mask(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Bool mask (..., V), True on the tokens the sampler may draw from ``logits`` (already divided by T).

    ``top_k`` 0 and ``top_p`` 1 keep everything. Computed without gradients: the cut is piecewise
    constant in the logits.
    """
    logits = logits.detach()
    keep = torch.ones_like(logits, dtype=torch.bool)
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        keep = logits >= kth
    if top_p < 1.0:
        cut = logits.masked_fill(~keep, -torch.inf)
        ascending, order = torch.sort(cut, dim=-1)
        below = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1.0 - top_p
        below[..., -1] = False  # the most likely token stays
        keep = keep & ~torch.zeros_like(below).scatter(-1, order, below)
    return keep


def truncated_logprobs(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    top_k: int = 0,
    top_p: float = 1.0,
    *,
    keep: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """log p(token) under the cut and renormalised distribution of ``logits`` (..., V) (divided by T).

    ``tokens`` (...) are the sampled ids. Each sampled token is kept in its own row's support even if
    the cut would drop it (a token the sampler drew at the nucleus edge under bf16 or other weights),
    so every log-prob is finite. Differentiable in the kept logits. ``keep`` skips recomputing the mask.
    """
    keep = truncation_mask(logits, top_k, top_p) if keep is None else keep
    keep = keep.scatter(-1, tokens.unsqueeze(-1), True)
    cut = logits.masked_fill(~keep, -torch.inf)
    return torch.log_softmax(cut, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
