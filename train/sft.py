"""Supervised fine-tuning on (prompt, completion) pairs: the framework's SFT stage.

It builds the built-in base model from teacher traces, and it is the paper's "distillation" arm
(Yue et al. 2025, arXiv 2504.13837, section 4: a student SFT'd on a stronger model's traces), so
it is generic: any Hugging Face causal LM and tokenizer. Loss: next-token cross-entropy on the
completion tokens and the EOS after them; prompt and padding positions carry label -100, so the
model learns to answer, not to write prompts, and learns to stop.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_cosine_schedule_with_warmup

IGNORE = -100  # label that torch's cross-entropy (and so HF's causal-LM loss) skips
WARMUP_SHARE = 0.05  # of the steps: a short linear warm-up keeps early Adam steps from blowing up


def sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[tuple[str, str]],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` in place for ``steps`` AdamW steps; returns the loss of every step.

    examples: (prompt, completion) pairs; the prompt is tokenized as generation will see it
    (with the tokenizer's special tokens, e.g. BOS), the completion without, then EOS.
    Batches of ``batch_size`` go through the examples in a shuffled order (reshuffled every
    epoch, from ``seed``), right-padded. Cosine schedule after a 5% warm-up; gradients clipped
    to norm 1. The model is left in eval mode.
    """
    if steps < 1 or batch_size < 1 or not examples:
        raise ValueError(f"sft needs steps >= 1, batch_size >= 1 and examples; got {steps}, {batch_size}, {len(examples)}")
    if tokenizer.eos_token_id is None:
        raise ValueError("sft needs a tokenizer with an EOS token: completions must learn to stop")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sequences = tokenize_pairs(tokenizer, examples)
    device = next(model.parameters()).device

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(WARMUP_SHARE * steps), steps)
    order = _batches(len(sequences), batch_size, steps, seed)
    losses: list[float] = []
    model.train()
    bar = tqdm(order, total=steps, desc="sft", disable=not progress, dynamic_ncols=True)
    for indices in bar:
        input_ids, attention_mask, labels = collate([sequences[i] for i in indices], pad_id)
        out = model(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), labels=labels.to(device)
        )
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
    model.eval()
    return losses


def completion_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed next-token cross-entropy over the positions whose label is not IGNORE, their count).

    logits: (B, T, V); labels: (B, T) from :func:`collate`, IGNORE on prompt and padding. Position t
    predicts label t + 1 (the causal-LM shift transformers applies to ``labels``), so the sum divided
    by the count is the ``loss`` a transformers causal LM returns for these labels: the loss ``sft``
    trains on. Returning the sum lets a caller divide by the tokens of a batch split over micro-batches
    and processes.
    """
    targets = labels[:, 1:].to(logits.device)
    total = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return total, (targets != IGNORE).sum()


def tokenize_pairs(
    tokenizer: PreTrainedTokenizerBase, examples: list[tuple[str, str]], add_special_tokens: bool = True
) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per example: prompt ids masked with IGNORE, completion ids + EOS kept.

    ``add_special_tokens=False`` for prompts that carry their own (chat-templated ones), as in generation.
    """
    prompts = tokenizer([p for p, _ in examples], add_special_tokens=add_special_tokens).input_ids
    # Tokenized apart from the prompt, as the model will see them when it generates after a prompt.
    completions = tokenizer([c for _, c in examples], add_special_tokens=False).input_ids
    eos = tokenizer.eos_token_id
    return [(p + c + [eos], [IGNORE] * len(p) + c + [eos]) for p, c in zip(prompts, completions)]


def _batches(n: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """``steps`` lists of example indices: consecutive slices of per-epoch shuffles of range(n)."""
    generator = torch.Generator().manual_seed(seed)
    stream: list[int] = []
    while len(stream) < steps * batch_size:
        stream += torch.randperm(n, generator=generator).tolist()
    return [stream[s * batch_size : (s + 1) * batch_size] for s in range(steps)]


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) input_ids, attention_mask and labels (IGNORE on padding)."""
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask, labels
