"""Token-budget micro-batches (trainer.max_tokens_per_micro_batch): the packing, and an update equal to fixed micro-batches.

The 2-process version (processes with different micro-batch counts, DDP and ZeRO-2) is
``tests/test_distributed.py::test_one_step_is_the_same_for_1x2_and_2x1``.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from accelerate import Accelerator

from algorithms import AGGREGATIONS
from tests.dist_workers import ALGO, SAMPLES, fixed_batch, response_width
from train.actor import LOGPROB_GAP, response_logprobs, update_policy
from train.config import BatchPlan
from train.micro_batches import over_budget, pack, padded_size, padding_share, sample_lengths, split_to


def _lengths(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Skewed lengths, as RL batches have them: prompts 5-40 tokens, 80% of responses 1-30, 20% 200-512."""
    gen = torch.Generator().manual_seed(seed)
    prompts = torch.randint(5, 41, (n,), generator=gen)
    long = torch.rand(n, generator=gen) < 0.2
    responses = torch.where(long, torch.randint(200, 513, (n,), generator=gen), torch.randint(1, 31, (n,), generator=gen))
    return prompts, responses


def _sizes(parts, prompts, responses) -> list[int]:
    return [padded_size(prompts[rows], responses[rows]) for rows in parts]


@pytest.mark.parametrize("budget", [300, 600, 2048, 10_000])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_packing_takes_every_sample_once_within_the_budget(budget, seed):
    prompts, responses = _lengths(seed=seed)
    parts = pack(prompts, responses, budget)
    assert sorted(torch.cat(parts).tolist()) == list(range(len(prompts)))
    alone = 0
    for rows, size in zip(parts, _sizes(parts, prompts, responses)):
        if size > budget:  # only a sample over the budget by itself
            assert len(rows) == 1 and int(prompts[rows] + responses[rows]) > budget
            alone += 1
    assert alone == over_budget(prompts, responses, budget) == int(((prompts + responses) > budget).sum())
    assert (alone > 0) == (budget < int((prompts + responses).max()))
    # next-fit: a micro-batch is closed only when the next sample would not fit it
    for rows, following in zip(parts, parts[1:]):
        grown = torch.cat([rows, following[:1]])
        assert padded_size(prompts[grown], responses[grown]) > budget


def test_sorted_packing_pads_less_than_fixed_micro_batches():
    """Fixed micro-batches of 8 pad every row to the batch's longest prompt and response; even cut to their
    own widths they mix long and short rows. Packing by length under a budget of the same memory as a fixed
    micro-batch of average widths pads far less, and so runs fewer tokens."""
    prompts, responses = _lengths(n=256)
    real = int(prompts.sum() + responses.sum())
    k = 8
    fixed = [torch.arange(i, i + k) for i in range(0, len(prompts), k)]
    whole_width = [k * (int(prompts.max()) + int(responses.max()))] * len(fixed)  # today's fixed path
    own_width = _sizes(fixed, prompts, responses)  # fixed micro-batches cut to their own widths
    budget = k * int(prompts.float().mean() + responses.float().mean())
    packed = _sizes(pack(prompts, responses, budget), prompts, responses)
    shares = [padding_share(prompts, responses, sizes) for sizes in (whole_width, own_width, packed)]
    assert shares[0] > shares[1] > 0.5 > 0.2 > shares[2], shares
    assert sum(packed) < 0.6 * sum(own_width) and sum(packed) >= real


def test_splitting_reaches_a_count_and_keeps_the_budget():
    prompts, responses = _lengths()
    budget = 2048
    parts = pack(prompts, responses, budget)
    for count in (len(parts), len(parts) + 1, 2 * len(parts), len(prompts)):
        split = split_to(parts, count)
        assert len(split) == count
        assert sorted(torch.cat(split).tolist()) == list(range(len(prompts)))
        assert all(size <= budget or len(rows) == 1 for rows, size in zip(split, _sizes(split, prompts, responses)))
    with pytest.raises(ValueError, match="cannot make 65 micro-batches of 64 samples"):
        split_to(parts, len(prompts) + 1)


def test_trimmed_micro_batch_has_the_same_logprobs(tiny_model):
    """Dropping all-padding prompt columns (left) and response columns (right) changes no log-prob: positions
    count from each row's first real token."""
    batch = fixed_batch(tiny_model, skewed=True)
    short = batch.select(torch.tensor([5, 9, 12]))  # short responses, padded to the long ones' width
    trimmed = short.trim_padding()
    p, r = sample_lengths(short.prompt_mask, short.response_mask)
    assert trimmed.prompt_ids.shape == (3, int(p.max())) and trimmed.response_ids.shape == (3, int(r.max()))
    assert trimmed.old_logprobs.shape == trimmed.advantages.shape == trimmed.response_ids.shape
    tiny_model.eval()
    with torch.no_grad():
        wide, _ = response_logprobs(tiny_model, short.prompt_ids, short.prompt_mask, short.response_ids,
                                    short.response_mask, 1.0)
        narrow, _ = response_logprobs(tiny_model, trimmed.prompt_ids, trimmed.prompt_mask, trimmed.response_ids,
                                      trimmed.response_mask, 1.0)
    mask = trimmed.response_mask.bool()
    torch.testing.assert_close(narrow[mask], wide[:, : mask.shape[1]][mask], rtol=1e-5, atol=1e-6)


def _update(model: torch.nn.Module, agg: str, micro_batch_size: int, budget: int) -> tuple[dict, dict]:
    """One SGD step (lr 1, no clipping) on the skewed batch, one process: (weights after, metrics)."""
    model = copy.deepcopy(model)
    batch = fixed_batch(model, skewed=True)
    plan = BatchPlan(world_size=1, samples_per_step=SAMPLES, prompts_per_process=SAMPLES // 4, samples_per_process=SAMPLES,
                     mini_batches=1, samples_per_mini_batch_per_process=SAMPLES, grad_accum=SAMPLES // micro_batch_size,
                     tokens_per_micro_batch=budget)  # fmt: skip
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=plan.grad_accum)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    prepared, optimizer = accelerator.prepare(model, optimizer)
    algo = dataclasses.replace(ALGO, loss_agg=agg, entropy_coef=0.01)  # KL and entropy terms aggregated too
    metrics = update_policy(accelerator, prepared, optimizer, scheduler, batch, algo, plan, temperature=1.0,
                            max_grad_norm=0.0, max_len=response_width(skewed=True), generator=torch.Generator().manual_seed(0))
    return {name: p.detach().clone() for name, p in model.named_parameters()}, metrics


MEANS = ("actor/entropy", "actor/kl", "actor/clipfrac", "actor/approx_kl", LOGPROB_GAP, "rollout_corr/kl")


@pytest.mark.parametrize("agg", AGGREGATIONS.names())
def test_a_token_budget_step_equals_the_fixed_micro_batch_step(tiny_model, agg):
    """On a length-skewed batch, one optimizer step over micro-batches packed under a token budget equals the
    step over fixed micro-batches of 4 and over the whole batch at once, in every aggregation: same
    normalisers, same scaling. Budget 24 leaves the long samples alone, over it; 64 packs them in twos."""
    start = {name: p.detach().clone() for name, p in tiny_model.named_parameters()}
    whole, whole_metrics = _update(tiny_model, agg, micro_batch_size=SAMPLES, budget=0)  # one backward
    fixed, fixed_metrics = _update(tiny_model, agg, micro_batch_size=4, budget=0)
    grad_norm = whole_metrics["actor/grad_norm"]
    assert grad_norm > 0.1  # a scaling error of 2 would be far outside the tolerances below
    batch = fixed_batch(tiny_model, skewed=True)
    lengths = sum(sample_lengths(batch.prompt_mask, batch.response_mask))
    for budget in (24, 64):
        budgeted, metrics = _update(tiny_model, agg, micro_batch_size=4, budget=budget)
        for name in start:
            for other in (whole, fixed):
                torch.testing.assert_close(budgeted[name] - start[name], other[name] - start[name], rtol=1e-4, atol=1e-6,
                                           msg=lambda m: f"{agg}, budget {budget}, {name}: {m}")
        assert metrics["actor/grad_norm"] == pytest.approx(grad_norm, rel=1e-5)
        # the loss, a sum over micro-batches, on the fixed path's scale; means weighted by tokens, as one backward has them
        assert metrics["actor/pg_loss"] == pytest.approx(fixed_metrics["actor/pg_loss"], rel=1e-5, abs=1e-7)
        for key in MEANS:
            assert metrics[key] == pytest.approx(whole_metrics[key], rel=1e-4, abs=1e-6), key
        assert metrics["actor/over_budget_samples"] == int((lengths > budget).sum())
        assert metrics["actor/micro_batches"] > 1
    assert int((lengths > 24).sum()) >= 1 and int((lengths > 64).sum()) == 0
