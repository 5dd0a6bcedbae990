"""The policy under training: log-probs of sampled responses and the policy-loss update."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from trl.trainer.utils import entropy_from_logits, selective_log_softmax

from algorithms import (
    TrainBatch,
    compute_policy_loss,
    kl_penalty,
    masked_mean,
    policy_loss_options,
    rollout_mismatch_metrics,
    value_loss,
)
from algorithms.masked import aggregate_loss
from algorithms.truncation import truncated_logprobs
from train.config import AlgorithmConfig, BatchPlan
from train.micro_batches import over_budget, pack, sample_lengths, split_to


@dataclass
class ResponseForward:
    logprobs: torch.Tensor  # (B, T) log pi(token | prefix) at the sampling temperature
    entropy: Optional[torch.Tensor]  # (B, T) policy entropy, on request
    values: Optional[torch.Tensor]  # (B, T) critic's V before each response token (PPO only)


def response_forward(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,  # (B, P) left-padded
    prompt_mask: torch.Tensor,  # (B, P)
    response_ids: torch.Tensor,  # (B, T) right-padded
    response_mask: torch.Tensor,  # (B, T)
    temperature: float,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    *,
    top_k: int = 0,
    top_p: float = 1.0,
) -> ResponseForward:
    """log softmax(logits / temperature) of each response token; entropy on request, differentiable
    when ``entropy_grad`` (an entropy bonus), else detached (a metric); critic values when the
    model has a critic.

    With ``top_k`` > 0 or ``top_p`` < 1 the log-probs are those of the distribution the sampler drew
    from: cut to the top-k / nucleus of these logits and renormalised (``algorithms.truncation``), so
    pi / pi_old is 1 at the first update. The entropy stays that of the whole distribution.

    Positions are counted from each row's first real token, as ``generate`` does with left padding,
    so the log-probs match the sampler's. Position t of the response is predicted from the prefix
    before it, and so is its value (verl's and TRL's convention).
    """
    device = next(model.parameters()).device
    input_ids = torch.cat([prompt_ids, response_ids], dim=1).to(device)
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1).to(device)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    predicting = slice(prompt_ids.shape[1] - 1, -1)  # positions whose next token is a response token
    logits = out.logits[:, predicting].float() / temperature  # (B, T, V)
    if top_k > 0 or top_p < 1.0:
        logprobs = truncated_logprobs(logits, response_ids.to(device), top_k, top_p)
    else:
        logprobs = selective_log_softmax(logits, response_ids.to(device))
    entropy = entropy_from_logits(logits if entropy_grad else logits.detach()) if with_entropy else None
    values = getattr(out, "critic_values", None)
    return ResponseForward(logprobs, entropy, values[:, predicting].float() if values is not None else None)


def response_logprobs(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(log-probs (B, T), entropy (B, T) or None) of ``response_forward``."""
    out = response_forward(model, prompt_ids, prompt_mask, response_ids, response_mask, temperature, with_entropy)
    return out.logprobs, out.entropy


@torch.no_grad()
def batched_forward(
    model: torch.nn.Module, rollouts, temperature: float, micro_batch_size: int, *, top_k: int = 0, top_p: float = 1.0
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Log-probs (B, T) and critic values (B, T) or None, in micro-batches without gradients, on CPU."""
    was_training = model.training
    model.eval()
    logprobs, values = [], []
    for start in range(0, len(rollouts), micro_batch_size):
        rows = slice(start, start + micro_batch_size)
        out = response_forward(
            model,
            rollouts.prompt_ids[rows],
            rollouts.prompt_mask[rows],
            rollouts.response_ids[rows],
            rollouts.response_mask[rows],
            temperature,
            top_k=top_k,
            top_p=top_p,
        )
        logprobs.append(out.logprobs.cpu())
        values.append(out.values.cpu() if out.values is not None else None)
    model.train(was_training)
    mask = rollouts.response_mask
    return torch.cat(logprobs) * mask, (torch.cat(values) * mask if values[0] is not None else None)


@dataclass(frozen=True)
class LossNorm:
    """Token and sequence counts of the whole mini-batch (all micro-batches, all processes)."""

    num_tokens: float
    num_seqs: float
    max_len: int  # the response length budget, Dr.GRPO's constant normaliser


LOGPROB_GAP = "rollout/logprob_abs_diff"  # mean |log pi_sampler - log pi_old| per response token


def micro_batch_loss(
    model: torch.nn.Module,
    batch: TrainBatch,
    algo: AlgorithmConfig,
    temperature: float,
    norm: LossNorm,
    train_actor: bool = True,
    *,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``algo.policy_loss`` (+ KL, - entropy, + value loss) of one micro-batch, normalised by the whole
    mini-batch. The loss takes the options it names from ``algo`` (``algorithms.policy_loss_options``);
    ``generator`` seeds the losses that pick tokens at random (clip_cov). ``train_actor=False`` zeroes the actor's terms (critic warm-up) but keeps them in the
    graph, so data-parallel gradient sync sees every parameter."""
    mask = batch.trained_mask.float()
    out = response_forward(
        model, batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask, temperature,
        with_entropy=True, entropy_grad=algo.entropy_coef > 0, top_k=top_k, top_p=top_p,
    )
    logprobs, entropy = out.logprobs, out.entropy
    device = logprobs.device
    mask = mask.to(device)
    old_logprobs = logprobs.detach() if batch.old_logprobs is None else batch.old_logprobs.to(device)
    agg = dict(num_tokens=norm.num_tokens, num_seqs=norm.num_seqs, max_len=norm.max_len)
    options = {name: getattr(algo, name) for name in policy_loss_options(algo.policy_loss)}
    loss, metrics = compute_policy_loss(
        algo.policy_loss, logprobs, old_logprobs, batch.advantages.to(device), mask,
        agg=algo.loss_agg, generator=generator, **agg, **options,
        rollout_is_weights=None if batch.rollout_is_weights is None else batch.rollout_is_weights.to(device),
    )
    metrics["pg_loss"] = loss.detach()
    # the sampler against the trainer on the same tokens: ~0 when the rollout engine has the current weights
    metrics[LOGPROB_GAP] = masked_mean((batch.sample_logprobs.to(device) - old_logprobs).abs(), mask)
    sampled = batch.sample_logprobs.to(device)
    if bool(mask.any()):  # a micro-batch that rejection emptied has nothing to compare
        for key, value in rollout_mismatch_metrics(old_logprobs.detach(), sampled, mask).items():  # verl's figures
            metrics[f"rollout_corr/{key}"] = value
    if algo.kl_coef > 0:
        kl = kl_penalty(logprobs, batch.ref_logprobs.to(device), algo.kl_estimator)
        kl_loss = aggregate_loss(kl, mask, algo.loss_agg, **agg)
        loss = loss + algo.kl_coef * kl_loss
        metrics["kl"] = masked_mean(kl, mask).detach()
    entropy_loss = aggregate_loss(entropy, mask, algo.loss_agg, **agg)
    if algo.entropy_coef > 0:
        loss = loss - algo.entropy_coef * entropy_loss
    metrics["entropy"] = masked_mean(entropy, mask).detach()
    if not train_actor:
        loss = loss * 0.0
    if out.values is not None:
        vf_loss, vf_metrics = value_loss(
            out.values, batch.old_values.to(device), batch.returns.to(device), mask,
            clip=algo.critic.value_clip, agg=algo.loss_agg, **agg,
        )
        loss = loss + algo.critic.vf_coef * vf_loss
        metrics.update({"critic/vf_loss": vf_loss.detach(), **{f"critic/{k}": v for k, v in vf_metrics.items()}})
    return loss, metrics


def update_policy(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    batch: TrainBatch,
    algo: AlgorithmConfig,
    plan: BatchPlan,
    temperature: float,
    max_grad_norm: float,
    max_len: int,
    generator: torch.Generator,
    train_actor: bool = True,
    *,
    top_k: int = 0,
    top_p: float = 1.0,
) -> dict[str, float]:
    """``algo.ppo_epochs`` passes over this process's share of the rollout batch.

    Each optimizer step sees ``plan.grad_accum`` micro-batches here and the same on every other
    process. accelerate (or DeepSpeed) divides each backward by ``grad_accum`` and data-parallel
    training averages over processes; the loss is scaled back up by both so that the step's gradient
    is exactly the aggregation over the whole mini-batch, however it was split.

    With a token budget (``plan.tokens_per_micro_batch``) the micro-batches are packed by length instead
    (``train.micro_batches``), as many as the budget needs, and accumulated by ``budget_step``; the
    normalisers and the scaling are the same, so the step is too.
    """
    undo_scaling = plan.grad_accum * plan.world_size
    size = plan.samples_per_mini_batch_per_process
    micro = size // plan.grad_accum
    sums: dict[str, float] = {}
    count = 0
    grad_norms: list[float] = []
    micro_batches: list[int] = []
    for _ in range(algo.ppo_epochs):
        order = torch.randperm(len(batch), generator=generator)
        for start in range(0, len(batch), size):
            mini = batch.select(order[start : start + size])
            norm = _global_norm(accelerator, mini, max_len)
            loss_of = functools.partial(micro_batch_loss, model, algo=algo, temperature=temperature, norm=norm,
                                        train_actor=train_actor, top_k=top_k, top_p=top_p, generator=generator)
            if plan.tokens_per_micro_batch:  # one entry per optimizer step
                grad_norm, step_metrics, parts = budget_step(
                    accelerator, model, optimizer, scheduler, mini, plan, loss_of, undo_scaling, max_grad_norm)
                grad_norms.append(grad_norm)
                micro_batches.append(parts)
                for key, value in step_metrics.items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
            else:
                for m in range(0, size, micro):  # fixed micro-batches: one entry per micro-batch
                    with accelerator.accumulate(model):
                        loss, metrics = loss_of(mini.select(torch.arange(m, m + micro)))
                        accelerator.backward(loss * undo_scaling)
                        if accelerator.sync_gradients:
                            grad_norms.append(clip_gradients(accelerator, model, max_grad_norm))
                        optimizer.step()  # accelerate skips it between accumulation boundaries
                        optimizer.zero_grad()
                    if accelerator.sync_gradients:
                        scheduler.step()  # not prepared by accelerate, which would step it once per process
                    for key, value in metrics.items():
                        sums[key] = sums.get(key, 0.0) + float(value)
                    count += 1
    out = {(k if "/" in k else f"actor/{k}"): v / count for k, v in sums.items()}
    gap = torch.tensor([out[LOGPROB_GAP]], device=accelerator.device)
    out[LOGPROB_GAP] = float(accelerator.gather(gap).max())  # the worst process: one stale engine shows
    out["actor/grad_norm"] = sum(grad_norms) / max(len(grad_norms), 1)
    out["actor/lr"] = scheduler.get_last_lr()[0]
    if plan.tokens_per_micro_batch:
        out.update(budget_metrics(accelerator, batch, plan.tokens_per_micro_batch, micro_batches))
    return out


SUMMED = ("pg_loss", "critic/vf_loss")  # normalised by the whole mini-batch: its micro-batches' values add up


def budget_step(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    mini: TrainBatch,
    plan: BatchPlan,
    loss_of: Callable[[TrainBatch], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    undo_scaling: float,
    max_grad_norm: float,
) -> tuple[float, dict[str, float], int]:
    """One optimizer step on ``mini`` in token-budget micro-batches: (grad norm, metrics, micro-batches).

    accelerate's ``accumulate`` counts a fixed ``gradient_accumulation_steps``; here the count varies with
    the lengths, so the boundary is set by hand: ``accelerator.sync_gradients`` is true on the last
    micro-batch only. Under DDP the others run in ``no_sync`` and the last backward all-reduces the sum, so
    processes may run different counts. Under DeepSpeed accelerate hands the flag to
    ``engine.set_gradient_accumulation_boundary`` and steps the engine at the boundary; ZeRO-2 and 3 reduce
    (and ZeRO-3 gathers parameters) at every micro-batch, so every process runs as many micro-batches as
    the one that needs most (``split_to``). Each backward is still divided by the configured grad-accum
    (accelerate's, or DeepSpeed's ``gradient_accumulation_steps``, both ``plan.grad_accum``) and averaged
    over processes, which ``undo_scaling`` undoes: the step is the aggregation over the mini-batch.

    Metrics: ``SUMMED`` ones are the mini-batch's sum over ``plan.grad_accum``, the fixed path's scale
    (its mean over micro-batches); the others, means within a micro-batch, are weighted by trained tokens.
    """
    prompt_lens, response_lens = sample_lengths(mini.prompt_mask, mini.response_mask)
    parts = pack(prompt_lens, response_lens, plan.tokens_per_micro_batch)
    if accelerator.distributed_type == DistributedType.DEEPSPEED and accelerator.num_processes > 1:
        most = accelerator.gather(torch.tensor([len(parts)], device=accelerator.device)).max()
        parts = split_to(parts, int(most))
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for i, rows in enumerate(parts):
        boundary = i == len(parts) - 1
        accelerator.sync_gradients = boundary  # DeepSpeed's accumulation boundary; optimizer.step() waits for it
        with contextlib.nullcontext() if boundary else accelerator.no_sync(model):
            part = mini.select(rows).trim_padding()
            loss, metrics = loss_of(part)
            accelerator.backward(loss * undo_scaling)
        tokens = float(part.trained_mask.sum())
        for key, value in metrics.items():
            weight = 1.0 if key in SUMMED else tokens
            sums[key] = sums.get(key, 0.0) + float(value) * weight
            weights[key] = weights.get(key, 0.0) + weight
    grad_norm = clip_gradients(accelerator, model, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad()
    scheduler.step()  # not prepared by accelerate, which would step it once per process
    metrics = {key: value / plan.grad_accum if key in SUMMED else value / max(weights[key], 1.0)
               for key, value in sums.items()}
    return grad_norm, metrics, len(parts)


def budget_metrics(accelerator: Accelerator, batch: TrainBatch, budget: int, micro_batches: list[int]) -> dict[str, float]:
    """Samples over the budget on all processes (each trained alone), and micro-batches per optimizer step here."""
    over = over_budget(*sample_lengths(batch.prompt_mask, batch.response_mask), budget)
    over_all = accelerator.reduce(torch.tensor(float(over), device=accelerator.device), reduction="sum")
    return {"actor/over_budget_samples": float(over_all),
            "actor/micro_batches": sum(micro_batches) / max(len(micro_batches), 1)}


def _global_norm(accelerator: Accelerator, mini: TrainBatch, max_len: int) -> LossNorm:
    counts = torch.tensor([float(mini.trained_mask.sum()), float(len(mini))], device=accelerator.device)
    summed = accelerator.reduce(counts, reduction="sum")
    return LossNorm(num_tokens=max(float(summed[0]), 1.0), num_seqs=float(summed[1]), max_len=max_len)


def clip_gradients(accelerator: Accelerator, model: torch.nn.Module, max_grad_norm: float) -> float:
    """Clip to ``max_grad_norm`` (0 = off) and return the norm before clipping; DeepSpeed clips by its own setting."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        norm = model.get_global_grad_norm()  # DeepSpeed clips by its own `gradient_clipping`
        return float(norm) if norm is not None else float("nan")
    if max_grad_norm > 0:
        return float(accelerator.clip_grad_norm_(model.parameters(), max_grad_norm))
    norms = [p.grad.detach().norm() for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
