"""Micro-batches under a token budget (verl's ``use_dynamic_bsz`` with ``ppo_max_token_len_per_gpu``).

Fixed micro-batches (``trainer.micro_batch_size`` samples) are padded to the longest prompt and the
longest response of the whole batch: with a few long responses among many short ones, most of every
forward pass is padding. Under ``trainer.max_tokens_per_micro_batch`` a mini-batch's samples (on one
process) are instead sorted by length, longest first, and packed into micro-batches while the padded
size, rows x (longest prompt + longest response) in the micro-batch, stays within the budget; each is
then cut to its own widths (``Rollouts.trim_padding``). Sorting puts samples of like length together, so
the padding left is within a micro-batch of near-equal rows. A sample longer than the budget on its own
goes alone, over the budget.

verl balances real tokens over a computed number of micro-batches (Karmarkar-Karp) because it packs
sequences without padding; with padded micro-batches the budget binds on the padded size, which sorted
next-fit packing (each micro-batch filled, then the next) keeps near its minimum. Pure functions of the lengths: the trainer
(``train.actor.update_policy``) does the accumulation.
"""

from __future__ import annotations

import torch


def sample_lengths(prompt_mask: torch.Tensor, response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(real prompt tokens (B,), real response tokens (B,)) of each sample."""
    return prompt_mask.sum(-1).long(), response_mask.sum(-1).long()


def padded_size(prompt_lens: torch.Tensor, response_lens: torch.Tensor) -> int:
    """Tokens of one micro-batch cut to its own widths: rows x (longest prompt + longest response)."""
    if len(prompt_lens) == 0:
        return 0
    return len(prompt_lens) * (int(prompt_lens.max()) + int(response_lens.max()))


def pack(prompt_lens: torch.Tensor, response_lens: torch.Tensor, budget: int) -> list[torch.Tensor]:
    """Row indices of each micro-batch: samples sorted by prompt + response length, longest first (ties in
    row order), each micro-batch filled until one more row would take its padded size over ``budget``. A
    sample over the budget alone gets a micro-batch of its own."""
    order = torch.argsort(prompt_lens + response_lens, descending=True, stable=True).tolist()
    parts: list[list[int]] = []
    width_p = width_r = 0
    for row in order:
        p, r = int(prompt_lens[row]), int(response_lens[row])
        if parts and (len(parts[-1]) + 1) * (max(width_p, p) + max(width_r, r)) <= budget:
            parts[-1].append(row)
            width_p, width_r = max(width_p, p), max(width_r, r)
        else:
            parts.append([row])
            width_p, width_r = p, r
    return [torch.tensor(part, dtype=torch.long) for part in parts]


def split_to(parts: list[torch.Tensor], count: int) -> list[torch.Tensor]:
    """``parts`` split until there are ``count``: the one with the most rows (the first of equals) is halved,
    in order. Halves of a micro-batch are never wider than it, so the budget still holds. Used where every
    process must run as many micro-batches as the others (DeepSpeed ZeRO reduces at every backward)."""
    parts = list(parts)
    if count > sum(len(part) for part in parts):
        raise ValueError(f"cannot make {count} micro-batches of {sum(len(p) for p in parts)} samples")
    while len(parts) < count:
        largest = max(range(len(parts)), key=lambda i: len(parts[i]))
        part = parts[largest]
        half = (len(part) + 1) // 2
        parts[largest : largest + 1] = [part[:half], part[half:]]
    return parts


def over_budget(prompt_lens: torch.Tensor, response_lens: torch.Tensor, budget: int) -> int:
    """Samples that alone exceed ``budget``: each trains in a micro-batch of its own, over the budget."""
    return int(((prompt_lens + response_lens) > budget).sum())


def padding_share(prompt_lens: torch.Tensor, response_lens: torch.Tensor, sizes: list[int]) -> float:
    """Share of the forward passes' tokens that are padding, for micro-batches of padded ``sizes``."""
    real = int(prompt_lens.sum() + response_lens.sum())
    total = sum(sizes)
    return 1.0 - real / total if total else 0.0
