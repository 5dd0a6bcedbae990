"""Benchmark: one GRPO step of rlvr against TRL's GRPOTrainer, same model, batch and lengths.

Both train the built-in base model on the built-in task with 16 prompts x 8 samples, up to 64 new
tokens, temperature 1.0, no KL, token-mean loss (TRL's loss_type="dapo"), one PPO epoch, AdamW at
the same learning rate, one torch thread, generation with transformers ``generate`` in both. Each
runs ``--steps`` steps after ``--warmup`` untimed ones; the table gives the median seconds per step
and generated tokens per second.

    python launch/bench_grpo_trl.py --steps 20
    python launch/bench_grpo_trl.py --steps 20 --lora-rank 8 --lr 2e-3   # LoRA in both (PEFT)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from train.config import register_configs

    register_configs()
    with initialize_config_module("conf", version_base=None):
        raw = compose("config", overrides=overrides)
    return OmegaConf.to_object(raw), OmegaConf.to_container(raw, resolve=True)


def bench_rlvr(args, run_dir: Path) -> tuple[list[float], list[float]]:
    from train.main import run
    from train.tracking import read_metrics

    cfg, resolved = _compose(
        [
            "task=arithmetic",  # the task TRL's side reads (TaskConfig's defaults), so both run the same one
            f"trainer.total_steps={args.warmup + args.steps}",
            f"trainer.save_every={10**6}",
            f"trainer.lr={args.lr}",
            "trainer.lr_scheduler=constant",
            "trainer.warmup_steps=0",
            f"trainer.prompts_per_step={args.prompts}",
            f"algorithm.samples_per_prompt={args.group}",
            f"rollout.max_new_tokens={args.max_new_tokens}",
            f"trainer.micro_batch_size={args.prompts * args.group}",
            "eval.after_train=false",
            "logger.wandb=false",
            f"run_dir={run_dir}",
            f"model.lora.rank={args.lora_rank}",
            f"model.lora.alpha={2 * args.lora_rank}",
        ]
    )
    run(cfg, run_dir, resolved)
    rows = [m for m in read_metrics(run_dir, "time/step")][args.warmup :]
    return [m["time/step"] for m in rows], [m["train/response_length"] * args.prompts * args.group for m in rows]


def bench_trl(args, base: str, out_dir: Path) -> tuple[list[float], list[float]]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from train.config import TaskConfig
    from train.rewards import REWARDS
    from train.tasks import load_task

    problems = load_task(TaskConfig(), "train")[: args.prompts * (args.warmup + args.steps) * 2]
    dataset = Dataset.from_list([{"prompt": p.prompt, "answer": p.answer} for p in problems])
    times: list[float] = []
    tokens: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.t0 = time.perf_counter()

        def on_step_end(self, *_, **__):
            times.append(time.perf_counter() - self.t0)

        def on_log(self, _args, _state, _control, logs=None, **__):
            if logs and "completions/mean_length" in logs:
                tokens.append(logs["completions/mean_length"] * args.prompts * args.group)

    config = GRPOConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=args.prompts * args.group,
        num_generations=args.group,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=0.0,
        loss_type="dapo",
        num_iterations=1,
        max_steps=args.warmup + args.steps,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        seed=0,
    )
    model = AutoModelForCausalLM.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    peft_config = None
    if args.lora_rank:
        from peft import LoraConfig

        peft_config = LoraConfig(r=args.lora_rank, lora_alpha=2 * args.lora_rank, target_modules="all-linear",
                                 lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=REWARDS["arithmetic"],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[StepTimer()],
        peft_config=peft_config,
    )
    trainer.train()
    return times[args.warmup :], tokens[args.warmup :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--lora-rank", type=int, default=0, help="LoRA adapters of this rank in both (0 = full fine-tuning)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from train.config import RunConfig
    from train.models import resolve_base

    cfg = RunConfig()
    base = resolve_base(cfg.model, cfg.task)
    with tempfile.TemporaryDirectory() as tmp:
        ours, our_tokens = bench_rlvr(args, Path(tmp) / "rlvr")
        theirs, their_tokens = bench_trl(args, base, Path(tmp) / "trl")

    def row(name: str, secs: list[float], toks: list[float]) -> str:
        step = statistics.median(secs)
        return f"| {name} | {step:.3f} | {statistics.median(t / s for t, s in zip(toks, secs)):,.0f} |"

    lora = f", LoRA rank {args.lora_rank} on all linear layers" if args.lora_rank else ", full fine-tuning"
    print(f"\nGRPO step, {args.prompts} prompts x {args.group} samples, <= {args.max_new_tokens} new tokens{lora}, "
          f"median of {args.steps} steps, torch threads 1\n")
    print("| trainer | s / step | generated tokens / s |")
    print("| --- | --- | --- |")
    print(row("rlvr", ours, our_tokens))
    print(row(f"TRL GRPOTrainer", theirs, their_tokens))
    print(f"\nspeed-up (TRL s/step / rlvr s/step): {statistics.median(theirs) / statistics.median(ours):.2f}x")


if __name__ == "__main__":
    main()
