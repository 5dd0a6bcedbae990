"""Benchmark: the pass@k sweep on 1 process against 2 processes (every rank sweeping its share), one run.

The built-in base model on its routes task, base only (``rlvr-eval base_only=true``), HF ``generate``.
Each mode sweeps the same problems into a fresh folder; the base is built once beforehand, outside the
timings. Modes: 1 process with 1 torch thread, 1 process with 2 threads (the same cores as two
processes), 2 processes with 1 thread each under ``accelerate launch`` (gloo). Times are wall seconds of
the whole command, start-up included; the ratio is against the 1-process, 1-thread sweep. The records
of the modes are compared: pieces are seeded by their first problem, so they must be equal.

    python launch/bench_sweep.py
    python launch/bench_sweep.py --problems 400 --n 64
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from eval.records import read_records


def _command(processes: int, args: list[str]) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "eval.main", *args]
    accelerate = str(Path(sys.executable).parent / "accelerate")
    return [accelerate, "launch", "--multi_gpu", "--num_processes", str(processes), "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", "0", "-m", "eval.main", *args]  # fmt: skip


def _verdicts(run_dir: Path) -> list[tuple]:
    (file,) = (run_dir / "eval").glob("records_*.jsonl")
    return sorted((r.model, r.problem_id, r.correct) for r in read_records(file))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--n", type=int, default=256, help="samples per problem (the paper's k)")
    parser.add_argument("--batch-size", type=int, default=256, help="eval.batch_size: sequences per generate call")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    common = ["base_only=true", f"model.cache_dir={work / 'cache'}", f"eval.n={args.n}",
              f"eval.num_problems={args.problems}", f"eval.batch_size={args.batch_size}", "eval.keep_samples=0",
              "eval.perplexity=false", "logger=none"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env.update(WANDB_MODE="disabled")
    print(f"building the base (once, untimed) in {work / 'cache'}", flush=True)
    subprocess.run([sys.executable, "-m", "eval.main", *common, "eval.num_problems=1", "eval.n=1",
                    f"run_dir={work / 'warmup'}"], cwd=work, env=env, check=True, capture_output=True)  # fmt: skip

    modes = [("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1)]
    rows = []
    for name, processes, threads in modes:
        run_dir = work / name.replace(" ", "_")
        shutil.rmtree(run_dir, ignore_errors=True)  # a fresh sweep, not the resumption of an earlier one
        cmd = _command(processes, [*common, f"trainer.threads={threads}", f"run_dir={run_dir}"])
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=work, env={**env, "OMP_NUM_THREADS": str(threads)}, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        rows.append((name, seconds, _verdicts(run_dir)))
        print(f"{name}: {seconds:.1f} s", flush=True)

    reference = rows[0][1]
    samples = args.problems * args.n
    print(f"\nsweep of {args.problems} problems x {args.n} samples (built-in base, routes task, HF generate)")
    print(f"{'mode':<26}{'seconds':>9}{'samples/s':>11}{'speed-up':>10}  records")
    for name, seconds, verdicts in rows:
        same = "equal" if verdicts == rows[0][2] else "DIFFER"
        print(f"{name:<26}{seconds:>9.1f}{samples / seconds:>11.1f}{reference / seconds:>9.2f}x  {same}")


if __name__ == "__main__":
    main()
