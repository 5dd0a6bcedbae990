"""Run ``rlvr-train`` / ``rlvr-eval`` in a subprocess with a tiny model, for smoke and resume tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# A model and run small enough for seconds on a CPU; the built-in base is built once per cache dir.
# Short problems and enough SFT (about 15 s) that some samples are right, so GRPO has a signal: the
# arithmetic task, whose 1-2 digit sums a tiny model learns (the default routes task needs 3 digits).
TINY = [
    "task=arithmetic",
    "model.builtin.hidden_size=48",
    "model.builtin.num_layers=2",
    "model.builtin.num_heads=2",
    "model.builtin.intermediate_size=96",
    "model.builtin.sft_steps=500",
    "model.builtin.sft_traces=4000",
    "task.min_digits=1",
    "task.max_digits=2",
    "task.train_size=2000",
    "task.test_size=100",
    "trainer.prompts_per_step=4",
    "trainer.warmup_steps=0",
    "trainer.micro_batch_size=16",
    "trainer.threads=1",
    "rollout.max_new_tokens=32",
    "eval.max_new_tokens=32",
    "logger.wandb=false",
]


def run_cli(app: str, args: list[str], cwd: Path, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "offline"}
    entry = {"rlvr-train": ["-m", "train.main"], "rlvr-eval": ["-m", "eval.main"],
             "rlvr-study": ["-c", "import sys; from train.main import study; sys.argv[0] = 'rlvr-study'; study()"]}[app]
    proc = subprocess.run([sys.executable, *entry, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{app} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
