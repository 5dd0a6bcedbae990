"""The rollout engine interface: prompts x n samples -> ``Rollouts``.

The training loop talks only to this interface, so the HF ``generate`` engine and a vLLM engine
(which keeps its own copy of the weights, refreshed by ``sync_weights``) are interchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch

from algorithms.batch import Rollouts


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1  # samples per prompt
    temperature: float = 1.0  # ignored when greedy
    top_p: float = 1.0  # nucleus; 1.0 = off
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


class RolloutEngine(Protocol):
    def generate(self, prompts: Sequence[str], params: SamplingParams) -> Rollouts:
        """Sample ``params.n`` responses per prompt; sample i answers prompt ``group_ids[i]``,
        and the n samples of one prompt are adjacent."""
        ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the next ``generate`` use ``model``'s current weights."""
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
