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

    def select(self, index: torch.Tensor):
        """Rows ``index`` of every per-sample field, as the same stage type (a mini-batch, kept groups)."""
        picked = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                picked[f.name] = value[index]
            elif isinstance(value, list):
                picked[f.name] = [value[i] for i in index.tolist()]
            else:
                picked[f.name] = value
        return type(self)(**picked)

    def trim_padding(self):
        """The same rows without the columns that are padding in every row: prompt columns on the left
        (``prompt_mask`` 0 throughout) and response columns on the right (``response_mask`` 0 throughout),
        so a micro-batch of short samples is not as wide as the batch it came from. At least one column of
        each is kept. Every 2-D field but the prompt's two is response-aligned (B, T)."""
        prompt_cols = self.prompt_mask.bool().any(0).nonzero()
        first = min(int(prompt_cols[0]) if len(prompt_cols) else self.prompt_mask.shape[1], self.prompt_mask.shape[1] - 1)
        response_cols = self.response_mask.bool().any(0).nonzero()
        end = max(int(response_cols[-1]) + 1 if len(response_cols) else 0, 1)
        trimmed = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor) and value.dim() >= 2:
                value = value[:, first:] if f.name in PROMPT_FIELDS else value[:, :end]
            trimmed[f.name] = value
        return type(self)(**trimmed)


PROMPT_FIELDS = ("prompt_ids", "prompt_mask")  # left-padded (B, P); every other 2-D field is (B, T)


@dataclass
class ScoredRollouts(Rollouts):
    rewards: torch.Tensor  # (B,) float, sequence-level verifiable reward
    correct: torch.Tensor  # (B,) bool, the verifier accepted the answer

    @classmethod
    def of(cls, rollouts: Rollouts, rewards: torch.Tensor, correct: torch.Tensor) -> "ScoredRollouts":
        return cls(**_fields_of(rollouts), rewards=rewards, correct=correct)


@dataclass
class TrainBatch(ScoredRollouts):
    old_logprobs: torch.Tensor | None  # (B, T) log pi_old from the actor before the update; None when
    # the batch gets exactly one optimizer step, so pi_old is the policy being updated (its detached log-probs)
    ref_logprobs: torch.Tensor | None  # (B, T) log pi_ref, None when no reference is used
    advantages: torch.Tensor  # (B, T)
    returns: torch.Tensor  # (B, T)
    old_values: torch.Tensor | None = None  # (B, T) critic's V(s_t) before the update, PPO only
    loss_mask: torch.Tensor | None = None  # (B, T) response_mask minus tokens rollout rejection removed; None = response_mask
    rollout_is_weights: torch.Tensor | None = None  # (B, T) rollout-correction importance weights, None = off

    @property
    def trained_mask(self) -> torch.Tensor:
        """(B, T) the tokens the loss sees and counts: ``loss_mask`` if set, else ``response_mask``."""
        return self.response_mask if self.loss_mask is None else self.loss_mask

    @classmethod
    def of(  # type: ignore[override]
        cls,
        scored: ScoredRollouts,
        *,
        old_logprobs: torch.Tensor | None,
        ref_logprobs: torch.Tensor | None,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        old_values: torch.Tensor | None = None,
        loss_mask: torch.Tensor | None = None,
        rollout_is_weights: torch.Tensor | None = None,
    ) -> "TrainBatch":
        return cls(
            **_fields_of(scored),
            old_logprobs=old_logprobs,
            ref_logprobs=ref_logprobs,
            advantages=advantages,
            returns=returns,
            old_values=old_values,
            loss_mask=loss_mask,
            rollout_is_weights=rollout_is_weights,
        )


def concat_rollouts(parts: list[ScoredRollouts], pad_id: int) -> ScoredRollouts:
    """One batch from several (e.g. generation rounds): prompts re-padded on the left, responses
    on the right, group ids offset so groups stay distinct."""
    width_p = max(p.prompt_ids.shape[1] for p in parts)
    width_r = max(p.response_ids.shape[1] for p in parts)
    left = lambda t, v: torch.nn.functional.pad(t, (width_p - t.shape[1], 0), value=v)  # noqa: E731
    right = lambda t, v: torch.nn.functional.pad(t, (0, width_r - t.shape[1]), value=v)  # noqa: E731
    offsets = torch.tensor([0] + [int(p.group_ids.max()) + 1 for p in parts[:-1]]).cumsum(0)
    return ScoredRollouts(
        prompt_ids=torch.cat([left(p.prompt_ids, pad_id) for p in parts]),
        prompt_mask=torch.cat([left(p.prompt_mask, 0) for p in parts]),
        response_ids=torch.cat([right(p.response_ids, pad_id) for p in parts]),
        response_mask=torch.cat([right(p.response_mask, 0) for p in parts]),
        sample_logprobs=torch.cat([right(p.sample_logprobs, 0.0) for p in parts]),
        group_ids=torch.cat([p.group_ids + int(o) for p, o in zip(parts, offsets)]),
        texts=[text for p in parts for text in p.texts],
        truncated=torch.cat([p.truncated for p in parts]),
        rewards=torch.cat([p.rewards for p in parts]),
        correct=torch.cat([p.correct for p in parts]),
    )


def _fields_of(obj: object) -> dict:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}  # type: ignore[arg-type]
