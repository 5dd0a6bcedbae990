"""Batch-level reward shaping and sample filters (DAPO, arXiv 2503.14476)."""

from __future__ import annotations

import torch

from algorithms.advantages import group_stats


def informative_groups(rewards: torch.Tensor, group_ids: torch.Tensor, atol: float = 1e-6) -> torch.Tensor:
    """(B,) bool: True for samples whose group's rewards are not all equal (DAPO dynamic sampling, Eq. 11).

    A group whose samples all score the same has zero group-relative advantage and adds no gradient;
    DAPO drops such groups and samples more prompts until the batch is full. A group of one has
    nothing to compare with and is dropped too.

    >>> informative_groups(torch.tensor([1., 0., 1., 1., 0.]), torch.tensor([0, 0, 1, 1, 2])).tolist()
    [True, True, False, False, False]
    """
    _, std, size = group_stats(rewards.float(), group_ids)
    return (size > 1) & (std > atol)


def overlong_penalty(lengths: torch.Tensor, max_len: int, buffer: int, factor: float = 1.0) -> torch.Tensor:
    """(B,) soft penalty for responses close to the length cap (DAPO overlong reward shaping, Eq. 13).

    0 when length <= max_len - buffer; falls linearly to -factor at length = max_len:
    ((max_len - buffer) - length) / buffer * factor. Added to the verifiable reward.

    >>> overlong_penalty(torch.tensor([10, 16, 18, 20]), max_len=20, buffer=4).tolist()
    [0.0, 0.0, -0.5, -1.0]
    """
    if not 0 < buffer <= max_len:
        raise ValueError(f"overlong buffer={buffer} must be in (0, max_len={max_len}]")
    excess = (lengths.float() - (max_len - buffer)).clamp(min=0)
    return -(excess / buffer).clamp(max=1.0) * factor
