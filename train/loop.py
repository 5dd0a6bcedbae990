"""The one training loop: rollout -> reward -> filter -> advantages -> update -> log -> checkpoint."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from algorithms import AdvantageInputs, ScoredRollouts, TrainBatch, compute_advantages, kl_penalty, rollout_correction
from train.actor import batched_forward, update_policy
from train.checkpoint import save_checkpoint
from train.config import BatchPlan, RunConfig
from train.models import DTYPES
from train.profiling import Stages
from train.rewards import WeightedRewards
from train.rollout.base import RolloutEngine
from train.sampling import collect, greedy_baseline, mix, task_diagnostics
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
    engine: Optional[RolloutEngine]  # None for a trainer that samples nothing (distillation)
    rewards_of: WeightedRewards  # task.reward's verdicts and the task.rewards-weighted training reward
    problems: Sequence[Problem]  # the train split
    tracker: Tracker
    run_dir: Path
    run_config: dict[str, Any]  # the resolved config, stored with every checkpoint
    ref_model: Optional[torch.nn.Module] = None  # frozen reference, only when a KL term is configured


def train(t: Trainer, start_step: int = 0) -> None:
    cfg, acc = t.cfg, t.accelerator
    bar = tqdm(range(start_step, cfg.trainer.total_steps), desc=f"RL ({cfg.algorithm.name})",
               initial=start_step, total=cfg.trainer.total_steps, disable=not acc.is_main_process)
    stages = Stages(acc.device)
    for step in bar:
        t0 = time.perf_counter()
        with stages("weight_push"):  # wakes an engine that sleeps between rollouts (rollout.vllm.sleep_mode)
            t.engine.sync_weights(t.model)
        with stages("rollout"):
            got = collect(t.engine, acc, t.problems, t.rewards_of, cfg, t.plan, step, t.tokenizer.pad_token_id)
        baseline = None
        if cfg.algorithm.greedy_baseline:
            with stages("baseline_rollout"):
                baseline = greedy_baseline(t.engine, got.prompts, t.rewards_of, cfg, got.scored.group_ids)
        with stages("release"):  # rollouts done: a sleeping vLLM engine frees its memory for the update
            t.engine.release()
        with stages("old_logprobs"):  # and reference log-probs, critic values, rollout correction, advantages
            batch, corrected = make_train_batch(t, got.scored, baseline)
        with stages("update"):
            update = update_policy(
                acc, t.model, t.optimizer, t.scheduler, batch, cfg.algorithm, t.plan, cfg.rollout.temperature,
                cfg.trainer.max_grad_norm, cfg.rollout.max_new_tokens, step_generator(cfg.seed, step),
                train_actor=step >= cfg.algorithm.critic.warmup_steps, top_k=cfg.rollout.top_k, top_p=cfg.rollout.top_p,
            )
        metrics = {**rollout_metrics(acc, batch), **got.stats, **process_mean(acc, corrected), **update,
                   **timing(acc, batch, got.stats, stages.metrics(), time.perf_counter() - t0),
                   **task_diagnostics(acc, cfg.task.name, got)}
        done = step + 1
        if done % cfg.logger.log_every == 0 or done == cfg.trainer.total_steps:
            t.tracker.log(metrics, step=done)
        bar.set_postfix(acc=f"{metrics['train/accuracy']:.2f}", reward=f"{metrics['train/reward_mean']:.2f}")
        if done % cfg.trainer.save_every == 0 or done == cfg.trainer.total_steps:
            save_checkpoint(acc, t.run_dir, done, t.model, t.tokenizer, {"metrics": metrics, "config": t.run_config},
                            keep_train_states=cfg.trainer.keep_train_states, weights_dtype=DTYPES[cfg.model.dtype])


def step_generator(seed: int, step: int) -> torch.Generator:
    """Mini-batch shuffling for ``step``; the same on every process (they shuffle their own shards)."""
    return torch.Generator().manual_seed(mix(seed, step, 1 << 20))


def make_train_batch(
    t: Trainer, scored: ScoredRollouts, baseline_rewards: Optional[torch.Tensor] = None
) -> tuple[TrainBatch, dict[str, float]]:
    """Old and reference log-probs, critic values, the rollout correction, token rewards (+ KL penalty)
    and advantages; with the correction's metrics (``rollout_corr/*``, empty when it is off)."""
    algo, micro, temperature = t.cfg.algorithm, t.cfg.trainer.micro_batch_size, t.cfg.rollout.temperature
    cut = dict(top_k=t.cfg.rollout.top_k, top_p=t.cfg.rollout.top_p)  # the sampler's distribution (algorithms.truncation)
    corr = algo.rollout_correction
    correcting = (corr.rollout_is is not None or corr.rollout_rs is not None) and not corr.bypass_mode
    one_update = algo.ppo_epochs == 1 and t.plan.mini_batches == 1  # then pi_old is the policy as it is updated
    old, values = None, None
    if correcting or algo.critic.enabled or algo.reward_kl_coef > 0 or not (one_update or corr.bypass_mode):
        old, values = batched_forward(t.model, scored, temperature, micro, **cut)  # skipped when nothing needs it
    if corr.bypass_mode:
        old = scored.sample_logprobs * scored.response_mask  # verl's bypass mode: the sampler is pi_old
    ref = batched_forward(t.ref_model, scored, temperature, micro, **cut)[0] if t.ref_model is not None else None
    weights, loss_mask, corr_metrics = None, None, {}
    if correcting:
        weights, loss_mask, found = rollout_correction(
            old, scored.sample_logprobs, scored.response_mask.to(old.dtype), rollout_is=corr.rollout_is,
            rollout_is_threshold=corr.rollout_is_threshold, rollout_is_batch_normalize=corr.rollout_is_batch_normalize,
            rollout_rs=corr.rollout_rs, rollout_rs_threshold=corr.rollout_rs_threshold,
        )
        # the weights' and the rejection's figures; the mismatch itself is logged by the actor every step
        corr_metrics = {f"rollout_corr/{k}": float(v) for k, v in found.items() if k.startswith(("rollout_is", "rollout_rs"))}
    mask = scored.response_mask.float()
    last = (mask.sum(-1).long() - 1).clamp(min=0)
    token_rewards = torch.zeros_like(mask).scatter_(1, last.unsqueeze(-1), scored.rewards.unsqueeze(-1))
    if algo.reward_kl_coef > 0:  # REINFORCE++ / RLHF-PPO: the KL penalty becomes part of the reward
        token_rewards = token_rewards - algo.reward_kl_coef * kl_penalty(old, ref, algo.reward_kl_estimator) * mask
    adv = compute_advantages(
        algo.advantage,
        AdvantageInputs(token_rewards=token_rewards, response_mask=mask, group_ids=scored.group_ids,
                        values=values, baseline_rewards=baseline_rewards),
        gamma=algo.gamma, lam=algo.lam, norm_by_std=algo.norm_by_std,
    )
    batch = TrainBatch.of(scored, old_logprobs=old, ref_logprobs=ref, advantages=adv.advantages, returns=adv.returns,
                          old_values=values, loss_mask=loss_mask, rollout_is_weights=weights)
    return batch, corr_metrics


def process_mean(acc: Accelerator, metrics: dict[str, float]) -> dict[str, float]:
    """Each metric averaged over the processes (every process has the same keys)."""
    if not metrics or acc.num_processes == 1:
        return metrics
    values = acc.reduce(torch.tensor(list(metrics.values()), device=acc.device), reduction="mean").cpu()
    return dict(zip(metrics, values.tolist()))


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


def timing(acc: Accelerator, batch: TrainBatch, stats: dict, stages: dict[str, float], step_seconds: float) -> dict[str, float]:
    """Seconds per stage (weight push, rollout, reward, ReMax's baseline rollout, old log-probs, update),
    each stage's peak memory on this process, and throughput over all processes and per process."""
    tokens = float(acc.reduce(torch.tensor(float(batch.response_mask.sum()), device=acc.device), reduction="sum"))
    generation = stages["time/rollout"] - stats["time/reward"]  # all DAPO rounds, without scoring
    return {
        **stages,
        "time/step": step_seconds,
        "time/rollout": generation,
        "perf/tokens_per_s": tokens / max(step_seconds, 1e-9),
        "perf/tokens_per_s_per_process": tokens / acc.num_processes / max(step_seconds, 1e-9),
        "perf/rollout_tokens_per_s": tokens / max(generation, 1e-9),
    }
