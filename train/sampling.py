"""The rollout and reward stages of a step: which prompts, sampling, scoring, DAPO's refill rounds,
and ReMax's greedy baselines. Everything is seeded by (seed, step, rank, round), so a resumed run
draws exactly what the uninterrupted one drew.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from accelerate import Accelerator

from algorithms import Rollouts, ScoredRollouts, informative_groups, overlong_penalty
from algorithms.batch import concat_rollouts
from train.config import BatchPlan, RunConfig
from train.rewards import WeightedRewards
from train.rollout.base import RolloutEngine, SamplingParams
from train.tasks import DIAGNOSTICS, Problem


@dataclass
class Collected:
    scored: ScoredRollouts  # group g answers prompts[g]
    prompts: list[Problem]
    stats: dict[str, float] = field(default_factory=dict)


def mix(*parts: int) -> int:
    """A deterministic 63-bit seed from integers."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (part + 0x9E3779B97F4A7C15 + (value << 6) + (value >> 2))) & ((1 << 63) - 1)
    return value


def prompts_for_step(
    problems: Sequence[Problem], step: int, cfg: RunConfig, plan: BatchPlan, rank: int, round_: int = 0
) -> list[Problem]:
    """This process's prompts for ``step``: a seeded shuffle per epoch, so any step can be resumed.

    Round 0 walks the train split in order of one shuffle per epoch; DAPO's refill rounds draw from
    a shuffle of their own per (step, round), leaving the main order untouched.
    """
    if round_:
        order = _epoch_order(mix(cfg.seed, step, round_), 0, len(problems))
        first = rank * plan.prompts_per_process
        return [problems[order[i % len(problems)]] for i in range(first, first + plan.prompts_per_process)]
    first = step * cfg.trainer.prompts_per_step + rank * plan.prompts_per_process
    picked = []
    for i in range(first, first + plan.prompts_per_process):
        epoch, pos = divmod(i, len(problems))
        picked.append(problems[_epoch_order(cfg.seed, epoch, len(problems))[pos]])
    return picked


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, size: int) -> list[int]:
    return torch.randperm(size, generator=torch.Generator().manual_seed(mix(seed, epoch))).tolist()


def rollout_params(cfg: RunConfig, step: int, rank: int, round_: int = 0) -> SamplingParams:
    r = cfg.rollout
    return SamplingParams(
        n=cfg.algorithm.samples_per_prompt, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
        max_new_tokens=r.max_new_tokens, seed=mix(cfg.seed, step, rank, round_),
    )


def score(
    rollouts: Rollouts, prompts: Sequence[Problem], rewards_of: WeightedRewards, cfg: RunConfig,
    per_function: Optional[dict[str, list[float]]] = None,
) -> ScoredRollouts:
    """Rewards (TRL calling convention: ``answer`` and the ``task.columns`` as keyword lists), weighted
    over ``task.rewards``, plus DAPO's overlong penalty when configured. ``correct`` is the
    verifier's verdict alone. Each function's rewards that applied are appended to ``per_function``."""
    per_sample = [prompts[int(g)] for g in rollouts.group_ids]
    columns = {name: [p.metadata[name] for p in per_sample] for name in cfg.task.columns}  # one list per column
    got = rewards_of(
        prompts=[p.prompt for p in per_sample], completions=rollouts.texts, answer=[p.answer for p in per_sample], **columns
    )
    if per_function is not None:
        for name, values in got.per_function.items():
            per_function.setdefault(name, []).extend(float(v) for v in values if v is not None)
    rewards = torch.tensor(got.rewards)
    algo = cfg.algorithm
    if algo.overlong_buffer > 0:
        lengths = rollouts.response_mask.sum(-1)
        rewards = rewards + overlong_penalty(lengths, cfg.rollout.max_new_tokens, algo.overlong_buffer, algo.overlong_penalty)
    return ScoredRollouts.of(rollouts, rewards=rewards, correct=torch.tensor(got.verdicts) >= 1.0)


def collect(
    engine: RolloutEngine,
    acc: Accelerator,
    problems: Sequence[Problem],
    rewards_of: WeightedRewards,
    cfg: RunConfig,
    plan: BatchPlan,
    step: int,
    pad_id: int,
) -> Collected:
    """Rollouts and rewards for ``step``; with ``algorithm.dynamic_sampling``, DAPO's filter and refill.

    DAPO (arXiv 2503.14476, Sec. 3.2) drops groups whose rewards are all equal and samples more
    prompts until the batch holds ``prompts_per_step`` informative groups, here for at most
    ``algorithm.max_sampling_rounds`` rounds. All processes run the same number of rounds (ZeRO-3
    gathers weights collectively for each one). A batch still short after the last round is topped
    up with dropped groups, which carry zero advantage, and the shortfall is logged.
    """
    rank = acc.process_index
    reward_seconds = [0.0]
    per_function: dict[str, list[float]] = {}

    def timed_score(rollouts: Rollouts, prompts: Sequence[Problem]) -> ScoredRollouts:
        start = time.perf_counter()
        scored = score(rollouts, prompts, rewards_of, cfg, per_function)
        reward_seconds[0] += time.perf_counter() - start
        return scored

    prompts = prompts_for_step(problems, step, cfg, plan, rank)
    scored = timed_score(engine.generate([p.prompt for p in prompts], rollout_params(cfg, step, rank)), prompts)
    if not cfg.algorithm.dynamic_sampling:
        return Collected(scored, prompts, {"time/reward": reward_seconds[0], **_function_means(acc, per_function)})
    parts, all_prompts = [scored], list(prompts)
    rounds = 1
    while rounds < cfg.algorithm.max_sampling_rounds and _any_short(acc, parts, plan):
        more = prompts_for_step(problems, step, cfg, plan, rank, round_=rounds)
        rollouts = engine.generate([p.prompt for p in more], rollout_params(cfg, step, rank, rounds))
        parts.append(timed_score(rollouts, more))
        all_prompts += more
        rounds += 1
    picked, chosen, dropped, unfilled = _keep_informative(concat_rollouts(parts, pad_id=pad_id), plan, cfg)
    total = acc.reduce(torch.tensor([float(dropped), float(unfilled)], device=acc.device), reduction="sum").cpu()
    stats = {
        "time/reward": reward_seconds[0],
        **_function_means(acc, per_function),
        "sampling/rounds": float(rounds),
        "sampling/discarded_samples": float(total[0]) * cfg.algorithm.samples_per_prompt,
        "sampling/unfilled_groups": float(total[1]),
    }
    return Collected(picked, [all_prompts[g] for g in chosen], stats)


def _function_means(acc: Accelerator, per_function: dict[str, list[float]], prefix: str = "reward/") -> dict[str, float]:
    """``<prefix><name>``: each function's mean over all processes' samples it applied to (NaN if none)."""
    local = torch.tensor([[sum(v), float(len(v))] for v in per_function.values()], device=acc.device)
    total = acc.reduce(local, reduction="sum").cpu()
    return {f"{prefix}{name}": float(s / n) if n else float("nan") for name, (s, n) in zip(per_function, total.tolist())}


def task_diagnostics(acc: Accelerator, task_name: str, got: Collected) -> dict[str, float]:
    """``train/<name>``: the task's rollout diagnostics (``train.tasks.DIAGNOSTICS``), each the mean over all
    processes' samples it applies to (NaN if none); nothing for a task without diagnostics."""
    if task_name not in DIAGNOSTICS:
        return {}
    per_sample = [got.prompts[int(g)] for g in got.scored.group_ids]
    values = DIAGNOSTICS[task_name](per_sample, got.scored.texts)
    present = {name: [float(v) for v in vs if v is not None] for name, vs in values.items()}
    return _function_means(acc, present, prefix="train/")


def _keep_informative(merged: ScoredRollouts, plan: BatchPlan, cfg: RunConfig) -> tuple[ScoredRollouts, list[int], int, int]:
    """This process's batch: informative groups first, topped up with dropped ones; group ids renumbered.

    Returns (batch, the merged group ids chosen in order, groups dropped, groups short of informative).
    """
    informative = set(merged.group_ids[informative_groups(merged.rewards, merged.group_ids)].tolist())
    groups = merged.group_ids.unique_consecutive().tolist()
    good = [g for g in groups if g in informative]
    chosen = (good + [g for g in groups if g not in informative])[: plan.prompts_per_process]
    rows = torch.cat([torch.nonzero(merged.group_ids == g).flatten() for g in chosen])
    renumbered = torch.arange(len(chosen)).repeat_interleave(cfg.algorithm.samples_per_prompt)
    picked = dataclasses.replace(merged.select(rows), group_ids=renumbered)
    return picked, chosen, len(groups) - len(good), max(0, plan.prompts_per_process - len(good))


def _any_short(acc: Accelerator, parts: list[ScoredRollouts], plan: BatchPlan) -> bool:
    """True on every process when any process still lacks informative groups."""
    have = sum(p.group_ids[informative_groups(p.rewards, p.group_ids)].unique().numel() for p in parts)
    short = torch.tensor(float(have < plan.prompts_per_process), device=acc.device)
    return bool(acc.reduce(short, reduction="sum") > 0)


def greedy_baseline(
    engine: RolloutEngine, prompts: Sequence[Problem], rewards_of: WeightedRewards, cfg: RunConfig, group_ids: torch.Tensor
) -> torch.Tensor:
    """(B,) ReMax baseline (arXiv 2310.10505, Eq. 7): the reward of one greedy response per prompt,
    for every sample of that prompt."""
    params = SamplingParams(n=1, greedy=True, max_new_tokens=cfg.rollout.max_new_tokens)
    greedy = score(engine.generate([p.prompt for p in prompts], params), prompts, rewards_of, cfg)
    return greedy.rewards[group_ids]
