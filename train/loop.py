"""The one training loop: rollout -> reward -> advantages -> update -> log -> checkpoint."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from algorithms import AdvantageInputs, Rollouts, ScoredRollouts, TrainBatch, compute_advantages
from train.actor import batched_logprobs, update_policy
from train.checkpoint import save_checkpoint
from train.config import BatchPlan, RunConfig
from train.rollout.base import RolloutEngine, SamplingParams
from train.tasks import Problem
from train.tracking import Tracker


@dataclass
class Trainer:
    """Everything the loop needs, built once by ``train.main``."""

    cfg: RunConfig
    plan: BatchPlan
    accelerator: Accelerator
    model: torch.nn.Module  # prepared by accelerate (DDP / DeepSpeed engine / plain module)
    tokenizer: PreTrainedTokenizerBase
    optimizer: torch.optim.Optimizer
    scheduler: Any
    engine: RolloutEngine
    reward_fn: Callable[..., list[Optional[float]]]
    problems: Sequence[Problem]  # the train split
    tracker: Tracker
    run_dir: Path
    run_config: dict[str, Any]  # the resolved config, stored with every checkpoint
    ref_model: Optional[torch.nn.Module] = None  # frozen reference, only when algorithm.kl_coef > 0


def train(t: Trainer, start_step: int = 0) -> None:
    cfg, acc = t.cfg, t.accelerator
    bar = tqdm(range(start_step, cfg.trainer.total_steps), desc=f"RL ({cfg.algorithm.name})",
               initial=start_step, total=cfg.trainer.total_steps, disable=not acc.is_main_process)
    for step in bar:
        t0 = time.perf_counter()
        prompts = prompts_for_step(t.problems, step, cfg, t.plan, acc.process_index)
        t.engine.sync_weights(t.model)
        rollouts = t.engine.generate([p.prompt for p in prompts], rollout_params(cfg, step, acc.process_index))
        t1 = time.perf_counter()
        scored = score(rollouts, prompts, t.reward_fn)
        t2 = time.perf_counter()
        batch = make_train_batch(t, scored)
        update = update_policy(
            acc, t.model, t.optimizer, t.scheduler, batch, cfg.algorithm, t.plan, cfg.rollout.temperature,
            cfg.trainer.max_grad_norm, cfg.rollout.max_new_tokens, step_generator(cfg.seed, step),
        )
        t3 = time.perf_counter()
        metrics = {**rollout_metrics(acc, batch), **update, **timing(acc, batch, t0, t1, t2, t3)}
        done = step + 1
        if done % cfg.logger.log_every == 0 or done == cfg.trainer.total_steps:
            t.tracker.log(metrics, step=done)
        bar.set_postfix(acc=f"{metrics['train/accuracy']:.2f}", reward=f"{metrics['train/reward_mean']:.2f}")
        if done % cfg.trainer.save_every == 0 or done == cfg.trainer.total_steps:
            save_checkpoint(acc, t.run_dir, done, t.model, t.tokenizer, {"metrics": metrics, "config": t.run_config})


def prompts_for_step(problems: Sequence[Problem], step: int, cfg: RunConfig, plan: BatchPlan, rank: int) -> list[Problem]:
    """This process's prompts for ``step``: a seeded shuffle per epoch, so any step can be resumed."""
    first = step * cfg.trainer.prompts_per_step + rank * plan.prompts_per_process
    picked = []
    for i in range(first, first + plan.prompts_per_process):
        epoch, pos = divmod(i, len(problems))
        picked.append(problems[_epoch_order(cfg.seed, epoch, len(problems))[pos]])
    return picked


@functools.lru_cache(maxsize=2)
def _epoch_order(seed: int, epoch: int, size: int) -> list[int]:
    return torch.randperm(size, generator=torch.Generator().manual_seed(_mix(seed, epoch))).tolist()


def rollout_params(cfg: RunConfig, step: int, rank: int) -> SamplingParams:
    r = cfg.rollout
    return SamplingParams(
        n=cfg.algorithm.samples_per_prompt, temperature=r.temperature, top_p=r.top_p,
        max_new_tokens=r.max_new_tokens, seed=_mix(cfg.seed, step, rank),
    )


def step_generator(seed: int, step: int) -> torch.Generator:
    """Mini-batch shuffling for ``step``; the same on every process (they shuffle their own shards)."""
    return torch.Generator().manual_seed(_mix(seed, step, 1 << 20))


def score(rollouts: Rollouts, prompts: Sequence[Problem], reward_fn) -> ScoredRollouts:
    """Verifier rewards, TRL calling convention; a None (cannot judge) counts as 0."""
    per_sample = [prompts[int(g)] for g in rollouts.group_ids]
    rewards = reward_fn(
        prompts=[p.prompt for p in per_sample], completions=rollouts.texts, answer=[p.answer for p in per_sample]
    )
    values = torch.tensor([0.0 if r is None else float(r) for r in rewards])
    return ScoredRollouts.of(rollouts, rewards=values, correct=values >= 1.0)


def make_train_batch(t: Trainer, scored: ScoredRollouts) -> TrainBatch:
    cfg = t.cfg
    micro = cfg.trainer.micro_batch_size
    old = batched_logprobs(t.model, scored, cfg.rollout.temperature, micro)
    ref = batched_logprobs(t.ref_model, scored, cfg.rollout.temperature, micro) if t.ref_model is not None else None
    mask = scored.response_mask.float()
    last = (mask.sum(-1).long() - 1).clamp(min=0)
    token_rewards = torch.zeros_like(mask).scatter_(1, last.unsqueeze(-1), scored.rewards.unsqueeze(-1))
    adv = compute_advantages(
        cfg.algorithm.advantage,
        AdvantageInputs(token_rewards=token_rewards, response_mask=mask, group_ids=scored.group_ids),
        norm_by_std=cfg.algorithm.norm_by_std,
    )
    return TrainBatch.of(scored, old_logprobs=old, ref_logprobs=ref, advantages=adv.advantages, returns=adv.returns)


def rollout_metrics(acc: Accelerator, batch: TrainBatch) -> dict[str, float]:
    """Batch statistics over all processes."""
    lengths = batch.response_mask.sum(-1).float()
    local = torch.stack([batch.rewards, batch.correct.float(), lengths, batch.truncated.float()], dim=1)
    every = acc.gather(local.to(acc.device)).cpu()
    mask = batch.response_mask.bool()
    adv = batch.advantages[mask]
    return {
        "train/reward_mean": float(every[:, 0].mean()),
        "train/reward_std": float(every[:, 0].std()) if len(every) > 1 else 0.0,
        "train/accuracy": float(every[:, 1].mean()),
        "train/response_length": float(every[:, 2].mean()),
        "train/response_length_max": float(every[:, 2].max()),
        "train/truncated": float(every[:, 3].mean()),
        "train/advantage_mean": float(adv.mean()) if adv.numel() else 0.0,
        "train/advantage_std": float(adv.std()) if adv.numel() > 1 else 0.0,
        "train/advantage_abs_max": float(adv.abs().max()) if adv.numel() else 0.0,
    }


def timing(acc: Accelerator, batch: TrainBatch, t0: float, t1: float, t2: float, t3: float) -> dict[str, float]:
    tokens = float(acc.reduce(torch.tensor(float(batch.response_mask.sum()), device=acc.device), reduction="sum"))
    return {
        "time/step": t3 - t0,
        "time/rollout": t1 - t0,
        "time/reward": t2 - t1,
        "time/update": t3 - t2,
        "perf/tokens_per_s": tokens / max(t3 - t0, 1e-9),
        "perf/rollout_tokens_per_s": tokens / max(t1 - t0, 1e-9),
    }


def _mix(*parts: int) -> int:
    """A deterministic 63-bit seed from integers."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (part + 0x9E3779B97F4A7C15 + (value << 6) + (value >> 2))) & ((1 << 63) - 1)
    return value
