"""Typed hand-offs between the stages of one training step.

rollout -> ``Rollouts``; reward -> ``ScoredRollouts``; advantages -> ``TrainBatch``.
A stage adds fields and never rewrites an earlier stage's. Shapes: B samples, P prompt
tokens (left-padded), T response tokens (right-padded).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Rollouts:
    prompt_ids: torch.Tensor  # (B, P) long, left-padded prompt tokens
    prompt_mask: torch.Tensor  # (B, P) 1 on real prompt tokens
    response_ids: torch.Tensor  # (B, T) long, right-padded sampled tokens
    response_mask: torch.Tensor  # (B, T) 1 up to and including the stop token
    sample_logprobs: torch.Tensor  # (B, T) log-prob of each sampled token under the sampler
    group_ids: torch.Tensor  # (B,) long, index of the prompt each sample answers
    texts: list[str]  # B decoded responses, stop token removed
    truncated: torch.Tensor  # (B,) bool, hit max_new_tokens without a stop token

    def __len__(self) -> int:
        return self.response_ids.shape[0]


@dataclass
class ScoredRollouts(Rollouts):
    rewards: torch.Tensor  # (B,) float, sequence-level verifiable reward
    correct: torch.Tensor  # (B,) bool, the verifier accepted the answer

    @classmethod
    def of(cls, rollouts: Rollouts, rewards: torch.Tensor, correct: torch.Tensor) -> "ScoredRollouts":
        return cls(**_fields_of(rollouts), rewards=rewards, correct=correct)


@dataclass
class TrainBatch(ScoredRollouts):
    old_logprobs: torch.Tensor  # (B, T) log pi_old, recomputed by the actor before the update
    ref_logprobs: torch.Tensor | None  # (B, T) log pi_ref, None when no reference is used
    advantages: torch.Tensor  # (B, T)
    returns: torch.Tensor  # (B, T)

    @classmethod
    def of(  # type: ignore[override]
        cls,
        scored: ScoredRollouts,
        *,
        old_logprobs: torch.Tensor,
        ref_logprobs: torch.Tensor | None,
        advantages: torch.Tensor,
        returns: torch.Tensor,
    ) -> "TrainBatch":
        return cls(
            **_fields_of(scored),
            old_logprobs=old_logprobs,
            ref_logprobs=ref_logprobs,
            advantages=advantages,
            returns=returns,
        )

    def select(self, index: torch.Tensor) -> "TrainBatch":
        """Rows ``index`` of every per-sample field (a mini- or micro-batch)."""
        picked = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                picked[f.name] = value[index]
            elif isinstance(value, list):
                picked[f.name] = [value[i] for i in index.tolist()]
            else:
                picked[f.name] = value
        return TrainBatch(**picked)


def _fields_of(obj: object) -> dict:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}  # type: ignore[arg-type]
