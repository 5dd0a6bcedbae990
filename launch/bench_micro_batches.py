"""Benchmark: one policy update in fixed micro-batches against token-budget micro-batches, same batch.

A length-skewed rollout batch, as RL batches are (most responses short, a few near the cap): 128
samples, prompts of 8-16 tokens, 7 in 8 responses of 8-48 tokens and 1 in 8 of 192-240, on the
built-in model's shape (hidden 96, 3 layers; random weights: the time does not depend on them), one
process, one torch thread, AdamW, token-mean loss. ``update_policy`` runs one optimizer step over the
whole batch with ``trainer.micro_batch_size`` samples per micro-batch (padded to the batch's longest
prompt and response), then with ``trainer.max_tokens_per_micro_batch`` set to the same number of tokens
per forward pass (the default: micro-batch size x the batch's width), and any other budgets given. The
modes alternate, each step from the same weights; the table gives the median seconds per step, the
micro-batches, the tokens through the model and their padded share, and the gradient norm (the same
step: equal in every mode).

    python launch/bench_micro_batches.py
    python launch/bench_micro_batches.py --steps 20 --budgets 4096 2048
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch


def skewed_batch(args, vocab: int):
    """Prompts left-padded, responses right-padded to the longest, as the rollout engines hand them over."""
    from algorithms import TrainBatch

    gen = torch.Generator().manual_seed(args.seed)
    n, width_p, width_r = args.samples, 16, args.max_new_tokens
    prompt_lens = torch.randint(8, width_p + 1, (n,), generator=gen)
    long = torch.rand(n, generator=gen) < args.long_share
    response_lens = torch.where(long, torch.randint(192, width_r + 1, (n,), generator=gen),
                                torch.randint(8, 49, (n,), generator=gen))
    prompt_mask = (torch.arange(width_p) >= width_p - prompt_lens[:, None]).long()
    response_mask = (torch.arange(width_r) < response_lens[:, None]).long()
    mask = response_mask.float()
    advantages = torch.randn(n, 1, generator=gen).expand(-1, width_r) * mask
    return TrainBatch(
        prompt_ids=torch.randint(4, vocab, (n, width_p), generator=gen) * prompt_mask,
        prompt_mask=prompt_mask,
        response_ids=torch.randint(4, vocab, (n, width_r), generator=gen) * response_mask,
        response_mask=response_mask,
        sample_logprobs=-torch.rand(n, width_r, generator=gen) * mask,
        group_ids=torch.arange(n) // 8,
        texts=[""] * n,
        truncated=torch.zeros(n, dtype=torch.bool),
        rewards=torch.zeros(n),
        correct=torch.zeros(n, dtype=torch.bool),
        old_logprobs=None,  # one update per batch: pi_old is the policy being updated
        ref_logprobs=None,
        advantages=advantages,
        returns=advantages.clone(),
    )


def padding(batch, micro_batch_size: int, budget: int) -> tuple[int, int, float]:
    """(micro-batches, tokens through the model, padded share) of one pass over ``batch``."""
    from train.micro_batches import pack, padded_size, padding_share, sample_lengths

    prompts, responses = sample_lengths(batch.prompt_mask, batch.response_mask)
    if budget:
        sizes = [padded_size(prompts[rows], responses[rows]) for rows in pack(prompts, responses, budget)]
    else:  # fixed micro-batches keep the whole batch's widths
        width = batch.prompt_ids.shape[1] + batch.response_ids.shape[1]
        sizes = [min(micro_batch_size, len(batch) - start) * width for start in range(0, len(batch), micro_batch_size)]
    return len(sizes), sum(sizes), padding_share(prompts, responses, sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description="fixed against token-budget micro-batches: one update, same batch")
    parser.add_argument("--samples", type=int, default=128, help="rollout batch (one mini-batch, one process)")
    parser.add_argument("--long-share", type=float, default=0.125, help="share of responses of 192 tokens or more")
    parser.add_argument("--max-new-tokens", type=int, default=240, help="response width (the built-in model holds 256 tokens)")
    parser.add_argument("--micro-batch-size", type=int, default=16, help="trainer.micro_batch_size of the fixed mode")
    parser.add_argument("--budgets", type=int, nargs="*", help="token budgets (default: micro-batch size x batch width)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per mode first")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from accelerate import Accelerator

    from train.actor import update_policy
    from train.base_model import build_model, build_tokenizer
    from train.config import AlgorithmConfig, BatchPlan, BuiltinModelConfig
    from train.tasks.arithmetic import ALPHABET

    base = build_model(BuiltinModelConfig(), build_tokenizer(ALPHABET))
    batch = skewed_batch(args, base.config.vocab_size)
    width = batch.prompt_ids.shape[1] + batch.response_ids.shape[1]
    modes = [0, *(args.budgets or [args.micro_batch_size * width])]
    n, algo = args.samples, AlgorithmConfig(loss_agg="token-mean")
    times: dict[int, list[float]] = {mode: [] for mode in modes}
    norms: dict[int, float] = {}
    for rep in range(args.warmup + args.steps):
        for budget in modes:  # alternating, so load from other work on the machine falls on every mode alike
            plan = BatchPlan(world_size=1, samples_per_step=n, prompts_per_process=n // 8, samples_per_process=n,
                             mini_batches=1, samples_per_mini_batch_per_process=n,
                             grad_accum=n // args.micro_batch_size, tokens_per_micro_batch=budget)
            accelerator = Accelerator(cpu=True, gradient_accumulation_steps=plan.grad_accum)
            model = copy.deepcopy(base).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
            model, optimizer = accelerator.prepare(model, optimizer)
            start = time.perf_counter()
            metrics = update_policy(accelerator, model, optimizer, scheduler, batch, algo, plan, temperature=1.0,
                                    max_grad_norm=0.0, max_len=args.max_new_tokens, generator=torch.Generator().manual_seed(0))
            if rep >= args.warmup:
                times[budget].append(time.perf_counter() - start)
            norms[budget] = metrics["actor/grad_norm"]
    real = int(batch.prompt_mask.sum() + batch.response_mask.sum())
    lengths = batch.response_mask.sum(-1)
    print(f"{n} samples, {real:,} real tokens; responses: median {int(lengths.median())}, longest {int(lengths.max())}, "
          f"{int((lengths >= 192).sum())} of 192 or more; prompts {int(batch.prompt_mask.sum(-1).min())}-"
          f"{batch.prompt_ids.shape[1]} tokens; median of {args.steps} steps, 1 torch thread")
    print("| mode | micro-batches per step | tokens through the model | padded share | s / step | speed-up | grad norm |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    fixed = statistics.median(times[0])
    for budget in modes:
        count, tokens, share = padding(batch, args.micro_batch_size, budget)
        name = f"token budget {budget:,}" if budget else f"fixed, {args.micro_batch_size} samples"
        seconds = statistics.median(times[budget])
        print(f"| {name} | {count} | {tokens:,} | {share:.1%} | {seconds:.3f} | {fixed / seconds:.2f}x | {norms[budget]:.6f} |")


if __name__ == "__main__":
    main()
