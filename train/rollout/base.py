"""The rollout engine interface: prompts x n samples -> ``Rollouts``.

The training loop talks only to this interface, so the HF ``generate`` engine and a vLLM engine
(which keeps its own copy of the weights, refreshed by ``sync_weights``, and may give its memory back
between rollouts, ``release``) are interchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from algorithms.batch import Rollouts


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1  # samples per prompt
    temperature: float = 1.0  # ignored when greedy
    top_p: float = 1.0  # nucleus; 1.0 = off
    top_k: int = 0  # the k most likely tokens only; 0 = off
    max_new_tokens: int = 64  # response length cap
    greedy: bool = False  # argmax decoding (one sample per prompt makes sense then)
    seed: int = 0  # same seed, prompts and weights -> same samples
    stop_token_ids: tuple[int, ...] = ()  # extra tokens that end a response (EOS always does)

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1:
            raise ValueError(f"n={self.n} and max_new_tokens={self.max_new_tokens} must be >= 1")
        if not self.greedy and self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0; use greedy=True for argmax decoding")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0 (0 = off)")


class RolloutEngine(Protocol):
    def generate(self, prompts: Sequence[str], params: SamplingParams) -> Rollouts:
        """Sample ``params.n`` responses per prompt; sample i answers prompt ``group_ids[i]``,
        and the n samples of one prompt are adjacent."""
        ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the next ``generate`` use ``model``'s current weights (waking an engine that ``release`` put to sleep)."""
        ...

    def release(self) -> None:
        """Rollouts are done until the next ``sync_weights``: free what the engine holds meanwhile (vLLM's sleep mode)."""
        ...


def response_mask_from_ids(response_ids: torch.Tensor, stop_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids -> ((B, T) mask, 1 up to and including the first stop token; (B,) truncated flags)."""
    is_stop = torch.zeros_like(response_ids, dtype=torch.bool)
    for stop in stop_ids:
        is_stop |= response_ids == stop
    seen_stop_before = (is_stop.long().cumsum(-1) - is_stop.long()) > 0
    mask = (~seen_stop_before).long()
    truncated = ~is_stop.any(-1)
    return mask, truncated


def finish_rollouts(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    sample_logprobs: torch.Tensor,
    group_ids: torch.Tensor,
    tokenizer: PreTrainedTokenizerBase,
    stop_ids: Sequence[int],
) -> Rollouts:
    """Padded engine output -> ``Rollouts``: everything after the first stop token is padding, texts are
    decoded without the stop token. Every engine ends here, so masks and texts mean the same for all."""
    pad = tokenizer.pad_token_id
    response_mask, truncated = response_mask_from_ids(response_ids, stop_ids)
    response_ids = torch.where(response_mask.bool(), response_ids, pad)
    lengths = response_mask.sum(-1) - (~truncated).long()  # drop the stop token from the text
    texts = tokenizer.batch_decode(
        [ids[:n] for ids, n in zip(response_ids.tolist(), lengths.tolist())], skip_special_tokens=True
    )
    return Rollouts(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=response_ids,
        response_mask=response_mask,
        sample_logprobs=sample_logprobs.masked_fill(response_mask == 0, 0.0),  # -inf past the stop under a top-k/top-p cut
        group_ids=group_ids,
        texts=texts,
        truncated=truncated,
    )


def assemble_rollouts(
    prompt_rows: Sequence[Sequence[int]],
    response_rows: Sequence[Sequence[int]],
    logprob_rows: Sequence[Sequence[float]],
    group_ids: torch.Tensor,
    tokenizer: PreTrainedTokenizerBase,
    stop_ids: Sequence[int],
) -> Rollouts:
    """Ragged rows (one per sample: prompt ids, response ids, their log-probs) -> padded ``Rollouts``."""
    pad = tokenizer.pad_token_id
    prompt_width = max(len(row) for row in prompt_rows)
    response_width = max(1, max(len(row) for row in response_rows))
    return finish_rollouts(
        prompt_ids=torch.tensor([[pad] * (prompt_width - len(r)) + list(r) for r in prompt_rows]),
        prompt_mask=torch.tensor([[0] * (prompt_width - len(r)) + [1] * len(r) for r in prompt_rows]),
        response_ids=torch.tensor([list(r) + [pad] * (response_width - len(r)) for r in response_rows]),
        sample_logprobs=torch.tensor([list(r) + [0.0] * (response_width - len(r)) for r in logprob_rows]),
        group_ids=group_ids,
        tokenizer=tokenizer,
        stop_ids=stop_ids,
    )
