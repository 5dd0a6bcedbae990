"""Test-only programs that ``tests/test_distributed.py`` starts under a launcher, one per process.

``python dist_workers.py train DUMP_DIR [hydra overrides]``
    rlvr-train as usual; afterwards every rank saves the weights it holds in memory (gathered under
    ZeRO-3) and a fingerprint of each rollout batch it trained on to ``DUMP_DIR/rank<r>.pt``. Ranks
    see different batches, so equal weights on all ranks mean the updates were really synchronised.

``python dist_workers.py stream OUT``
    A tiny model and a LoRA-adapted one, partitioned by DeepSpeed ZeRO-3 over the processes, read through
    ``train.lora.streamed_weights`` (what the vLLM engine is pushed); at each tensor read, the parameters
    gathered at that moment are counted. Rank 0 saves the counts, the streamed weights and the weights
    gathered all at once with ``plain_weights`` to ``OUT``.

``python dist_workers.py update OUT PRESET BUDGET LOSS_AGG [LOSS_AGG ...]``
    One ``update_policy`` step (plain SGD, lr 1, no clipping) on the fixed batch of ``fixed_batch``,
    each process taking its contiguous share; rank 0 saves the updated weights and the reported
    gradient norm per aggregation to ``OUT``. With 1 process the same step runs as 2 micro-batches.
    ``BUDGET`` > 0: on the skewed batch, in micro-batches of at most that many tokens
    (trainer.max_tokens_per_micro_batch); every rank's micro-batch count is saved too.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch

from algorithms import TrainBatch
from train.config import AlgorithmConfig, BuiltinModelConfig

SAMPLES = 16  # rows of the fixed batch: 4 prompts x 4 samples
MICRO_BATCH = 8  # 1 process: grad-accum 2; 2 processes: grad-accum 1
PROMPT_LEN, RESPONSE_LEN = 6, 10
LONG_RESPONSE_LEN = 24  # response columns of the skewed batch (a few long responses, most short)
MODEL = BuiltinModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=3)
ALGO = AlgorithmConfig(samples_per_prompt=4, kl_coef=0.05)  # KL on, so its aggregation is checked too


def tiny_model():
    from train.base_model import build_model, build_tokenizer
    from train.tasks.arithmetic import ALPHABET

    return build_model(MODEL, build_tokenizer(ALPHABET))


def response_width(skewed: bool = False) -> int:
    """Response columns of ``fixed_batch``: the length budget its Dr.GRPO normaliser takes."""
    return LONG_RESPONSE_LEN if skewed else RESPONSE_LEN


def fixed_batch(model: torch.nn.Module, skewed: bool = False) -> TrainBatch:
    """A rollout batch with ragged prompts and responses, the same in every process.

    ``old_logprobs`` are ``model``'s own log-probs plus noise, so the PPO ratio moves off 1 and some
    tokens clip; response lengths differ, so token- and sequence-level aggregations disagree.
    ``skewed``: rows 0-2 long (16 to 24 response tokens), the other 13 short (1 to 4), as RL batches
    often are; split over 2 processes, the first gets the long ones.
    """
    from train.actor import response_logprobs

    gen = torch.Generator().manual_seed(11)
    vocab = model.config.vocab_size
    width = response_width(skewed)
    prompt_lens = torch.randint(2, PROMPT_LEN + 1, (SAMPLES,), generator=gen)
    response_lens = torch.randint(1, RESPONSE_LEN + 1, (SAMPLES,), generator=gen)
    if skewed:
        response_lens = torch.cat([torch.randint(16, width + 1, (3,), generator=gen),
                                   torch.randint(1, 5, (SAMPLES - 3,), generator=gen)])
    positions = torch.arange(PROMPT_LEN)
    prompt_mask = (positions >= PROMPT_LEN - prompt_lens[:, None]).long()  # left-padded
    response_mask = (torch.arange(width) < response_lens[:, None]).long()  # right-padded
    prompt_ids = torch.randint(4, vocab, (SAMPLES, PROMPT_LEN), generator=gen) * prompt_mask
    response_ids = torch.randint(4, vocab, (SAMPLES, width), generator=gen) * response_mask
    with torch.no_grad():
        current, _ = response_logprobs(model, prompt_ids, prompt_mask, response_ids, response_mask, 1.0)
    noise = 0.15 * torch.randn(SAMPLES, width, generator=gen)
    mask = response_mask.float()
    advantages = torch.randn(SAMPLES, 1, generator=gen).expand(-1, width) * mask
    return TrainBatch(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=response_ids,
        response_mask=response_mask,
        sample_logprobs=current * mask,
        group_ids=torch.arange(SAMPLES) // ALGO.samples_per_prompt,
        texts=[""] * SAMPLES,
        truncated=torch.zeros(SAMPLES, dtype=torch.bool),
        rewards=torch.zeros(SAMPLES),
        correct=torch.zeros(SAMPLES, dtype=torch.bool),
        old_logprobs=(current + noise) * mask,
        ref_logprobs=(current - noise.flip(0)) * mask,
        advantages=advantages,
        returns=advantages.clone(),
    )


def weights_of(accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full copies of the parameters this process holds; a collective under ZeRO-3."""
    from train.lora import gathered

    params = dict(accelerator.unwrap_model(model).named_parameters())
    with gathered(list(params.values())):
        return {name: p.detach().cpu().clone() for name, p in params.items()}


def train_and_dump(dump_dir: Path, overrides: list[str]) -> None:
    import dataclasses

    import train.loop as loop
    import train.main as entry
    from algorithms.registry import Registry

    from accelerate import Accelerator

    fingerprints: list[str] = []
    state_dicts_taken = []  # the checkpoint's calls of get_state_dict on this rank (under ZeRO 0-2 a host copy of the weights)
    real_update, real_train, real_get = loop.update_policy, entry.TRAINERS["rl"].train, Accelerator.get_state_dict

    def counting_get(self, model, unwrap=True):
        if sys._getframe(1).f_globals["__name__"] == "train.checkpoint":  # not accelerate's save_state (DDP: references)
            state_dicts_taken.append(1)
        return real_get(self, model, unwrap)

    def recording_update(accelerator, model, optimizer, scheduler, batch, *args, **kwargs):
        data = torch.cat([batch.prompt_ids.flatten(), batch.response_ids.flatten()]).numpy().tobytes()
        fingerprints.append(hashlib.sha256(data).hexdigest())
        return real_update(accelerator, model, optimizer, scheduler, batch, *args, **kwargs)

    def train_then_dump(trainer, start_step=0):
        real_train(trainer, start_step)
        weights = weights_of(trainer.accelerator, trainer.model)
        dump_dir.mkdir(parents=True, exist_ok=True)
        rank = trainer.accelerator.process_index
        torch.save({"weights": weights, "batches": fingerprints, "state_dicts_taken": len(state_dicts_taken)},
                   dump_dir / f"rank{rank}.pt")

    loop.update_policy = recording_update
    Accelerator.get_state_dict = counting_get
    trainers = Registry("trainer")  # the entry point's table, with the RL loop followed by the dump
    for name in entry.TRAINERS:
        kind = entry.TRAINERS[name]
        trainers.register(name)(dataclasses.replace(kind, train=train_then_dump) if name == "rl" else kind)
    entry.TRAINERS = trainers
    sys.argv = [sys.argv[0], *overrides]
    entry.main()


def stream(out: Path) -> None:
    import deepspeed
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    from train.config import LoRAConfig
    from train.lora import gathered, plain_weights, streamed_weights, with_lora

    torch.set_num_threads(1)
    deepspeed.init_distributed(dist_backend="gloo")
    zero3 = {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1}
    results = {}
    for kind in ("plain", "lora"):
        model = tiny_model()
        if kind == "lora":
            model = with_lora(model, LoRAConfig(rank=4, alpha=8.0))
            with torch.no_grad():  # adapters that change the weights (PEFT starts B at zero)
                for name, param in model.named_parameters():
                    if "lora_B" in name:
                        param.normal_(std=0.5, generator=torch.Generator().manual_seed(0))
        deepspeed.zero.Init(module=model, config_dict_or_path=zero3)
        params = list(model.parameters())
        assert all(p.ds_status == ZeroParamStatus.NOT_AVAILABLE for p in params)  # really partitioned
        streamed, live = {}, []
        for name, tensor in streamed_weights(model):
            live.append(sum(p.ds_status == ZeroParamStatus.AVAILABLE for p in params))
            streamed[name] = tensor.detach().cpu().clone()
        after = sum(p.ds_status != ZeroParamStatus.NOT_AVAILABLE for p in params)
        with gathered(params):
            whole = {name: t.detach().cpu().clone() for name, t in plain_weights(model, model.named_parameters())}
        results[kind] = {"live": live, "after": after, "streamed": streamed, "whole": whole, "params": len(params)}
    if torch.distributed.get_rank() == 0:
        torch.save(results, out)
    torch.distributed.barrier()


def one_update(out: Path, preset: str, budget: int, aggregations: list[str]) -> None:
    import dataclasses

    from omegaconf import OmegaConf

    from train.actor import update_policy
    from train.config import DeepSpeedConfig, RolloutConfig, RunConfig, TrainerConfig, check
    from train.distributed import build_accelerator, keep_grad_norm, world_size_from_env

    torch.set_num_threads(1)
    preset_file = Path(__file__).resolve().parents[1] / "conf" / "deepspeed" / f"{preset}.yaml"
    ds = OmegaConf.to_container(OmegaConf.load(preset_file))
    cfg = RunConfig(
        algorithm=ALGO,
        deepspeed=DeepSpeedConfig(preset=ds["preset"], config=ds["config"]),
        trainer=TrainerConfig(prompts_per_step=SAMPLES // ALGO.samples_per_prompt, micro_batch_size=MICRO_BATCH, max_grad_norm=0.0,
                              max_tokens_per_micro_batch=budget),
        rollout=RolloutConfig(max_new_tokens=response_width(skewed=budget > 0)),
    )
    if preset != "none" and len(aggregations) > 1:
        raise SystemExit("accelerate drives one DeepSpeed engine per Accelerator: one aggregation per launch")
    plan = check(cfg, world_size_from_env())
    accelerator = build_accelerator(cfg, plan)
    results = {"grad_accum": plan.grad_accum, "world_size": plan.world_size}
    for agg in aggregations:
        model = tiny_model()
        batch = fixed_batch(model, skewed=budget > 0)
        rank, share = accelerator.process_index, plan.samples_per_process
        local = batch.select(torch.arange(rank * share, (rank + 1) * share))
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        model, optimizer = accelerator.prepare(model, optimizer)
        keep_grad_norm(accelerator, model)
        metrics = update_policy(
            accelerator, model, optimizer, scheduler, local, dataclasses.replace(ALGO, loss_agg=agg), plan,
            temperature=1.0, max_grad_norm=0.0, max_len=response_width(skewed=budget > 0),
            generator=torch.Generator().manual_seed(0),
        )
        results[agg] = {"weights": weights_of(accelerator, model), "grad_norm": metrics["actor/grad_norm"]}
        if budget:
            counts = torch.tensor([metrics["actor/micro_batches"]], device=accelerator.device)
            results[agg].update(micro_batches=accelerator.gather(counts).tolist(),
                                over_budget=metrics["actor/over_budget_samples"])
    if accelerator.is_main_process:
        torch.save(results, out)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    mode, target, *rest = sys.argv[1:]
    if mode == "train":
        train_and_dump(Path(target), rest)
    elif mode == "stream":
        stream(Path(target))
    elif mode == "update":
        one_update(Path(target), rest[0], int(rest[1]), rest[2:])
    else:
        raise SystemExit(f"unknown mode {mode!r}; use train, stream or update")
