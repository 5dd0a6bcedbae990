"""Rollouts with transformers' ``generate``: batched, KV cache, left padding; runs on any device."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Sequence

import torch
from transformers import LogitsProcessor, PreTrainedModel, PreTrainedTokenizerBase

from algorithms.batch import Rollouts
from algorithms.truncation import truncation_mask
from train.rollout.base import SamplingParams, finish_rollouts


class _LogprobRecorder(LogitsProcessor):
    """Keeps the log-probs of the distribution each step samples from, read off for the token chosen next.

    transformers runs custom processors before its own temperature / top-k / top-p warpers, so
    ``scores`` here are the model's raw logits; the recorder applies the same temperature and cut
    (``algorithms.truncation``, checked against those warpers), so it records what ``generate`` samples
    from: log softmax(logits / T) without a cut, the renormalised cut distribution with one (as vLLM's
    ``processed_logprobs``, and as the trainer scores the tokens).
    """

    def __init__(self, temperature: float, top_k: int = 0, top_p: float = 1.0) -> None:
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.steps: list[torch.Tensor] = []  # per step (B, V) log-probs; chosen ones gathered later

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.steps:  # the previous step's token is now known: keep only its log-prob
            self.steps[-1] = self.steps[-1].gather(-1, input_ids[:, -1:]).squeeze(-1)
        logits = scores.float() / self.temperature
        if self.top_k > 0 or self.top_p < 1.0:
            logits = logits.masked_fill(~truncation_mask(logits, self.top_k, self.top_p), -torch.inf)
        self.steps.append(torch.log_softmax(logits, dim=-1))
        return scores

    def chosen(self, last_tokens: torch.Tensor) -> torch.Tensor:
        if self.steps and self.steps[-1].dim() == 2:
            self.steps[-1] = self.steps[-1].gather(-1, last_tokens.unsqueeze(-1)).squeeze(-1)
        return torch.stack(self.steps, dim=1)  # (B, T)


class HFEngine:
    """``RolloutEngine`` over a transformers causal LM.

    ``model_context`` yields the model to generate with; under DeepSpeed ZeRO-3 it is TRL's
    ``unwrap_model_for_generation``, which gathers the sharded weights for the duration.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        model_context: Callable[[], ContextManager[PreTrainedModel]],
        batch_size: int = 256,
        add_special_tokens: bool = True,
    ) -> None:
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs pad and eos tokens (set tokenizer.pad_token / eos_token)")
        self.tokenizer = tokenizer
        self.model_context = model_context
        self.batch_size = batch_size
        self.add_special_tokens = add_special_tokens  # False for chat-templated prompts, which carry their own BOS

    @classmethod
    def for_model(
        cls, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, batch_size: int = 256, add_special_tokens: bool = True
    ) -> "HFEngine":
        return cls(tokenizer, lambda: contextlib.nullcontext(model), batch_size, add_special_tokens)

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Nothing to do: ``generate`` runs on the training module itself."""

    def release(self) -> None:
        """Nothing to do: the engine holds no memory of its own."""

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], params: SamplingParams) -> Rollouts:
        encoded = self.tokenizer(list(prompts), add_special_tokens=self.add_special_tokens)["input_ids"]
        rows = [ids for ids in encoded for _ in range(params.n)]
        group_ids = torch.arange(len(prompts)).repeat_interleave(params.n)
        stop_ids = (self.tokenizer.eos_token_id, *params.stop_token_ids)
        torch.manual_seed(params.seed)
        chunks = []
        with self.model_context() as model:
            was_training = model.training
            model.eval()
            for start in range(0, len(rows), self.batch_size):
                chunks.append(self._generate_chunk(model, rows[start : start + self.batch_size], params, stop_ids))
            model.train(was_training)
        return _concat(chunks, group_ids, self.tokenizer, stop_ids)

    def _generate_chunk(self, model: PreTrainedModel, rows: list[list[int]], params: SamplingParams, stop_ids):
        pad = self.tokenizer.pad_token_id
        width = max(len(r) for r in rows)
        prompt_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        prompt_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        device = next(model.parameters()).device
        recorder = _LogprobRecorder(1.0, 0, 1.0) if params.greedy else _LogprobRecorder(params.temperature, params.top_k, params.top_p)
        out = model.generate(
            input_ids=prompt_ids.to(device),
            attention_mask=prompt_mask.to(device),
            do_sample=not params.greedy,
            temperature=None if params.greedy else params.temperature,
            top_p=None if params.greedy else params.top_p,
            top_k=None if params.greedy else params.top_k,  # 0: no top-k cut (models' configs may set one)
            max_new_tokens=params.max_new_tokens,
            eos_token_id=list(stop_ids),
            pad_token_id=pad,
            logits_processor=[recorder],
            use_cache=True,
            # Lockstep with the other processes only for ZeRO-3 partitioned weights. transformers turns it on
            # whenever a ZeRO-3 config is set and there are peers, which would stall a model loaded whole for
            # rank 0's sweep after a ZeRO-3 run, waiting on processes that are not sampling.
            synced_gpus=any(hasattr(p, "ds_id") for p in model.parameters()),
        )
        response_ids = out[:, width:].cpu()
        logprobs = recorder.chosen(out[:, -1]).cpu()
        return prompt_ids, prompt_mask, response_ids, logprobs


def _pad_right(tensors: list[torch.Tensor], value: float) -> torch.Tensor:
    width = max(t.shape[1] for t in tensors)
    return torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value) for t in tensors])


def _pad_left(tensors: list[torch.Tensor], value: float) -> torch.Tensor:
    width = max(t.shape[1] for t in tensors)
    return torch.cat([torch.nn.functional.pad(t, (width - t.shape[1], 0), value=value) for t in tensors])


def _concat(chunks, group_ids: torch.Tensor, tokenizer: PreTrainedTokenizerBase, stop_ids) -> Rollouts:
    pad = tokenizer.pad_token_id
    return finish_rollouts(
        prompt_ids=_pad_left([c[0] for c in chunks], pad),
        prompt_mask=_pad_left([c[1] for c in chunks], 0),
        response_ids=_pad_right([c[2] for c in chunks], pad),
        sample_logprobs=_pad_right([c[3] for c in chunks], 0.0),
        group_ids=group_ids,
        tokenizer=tokenizer,
        stop_ids=stop_ids,
    )
