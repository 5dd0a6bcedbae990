"""Every rank sweeps: the pass@k sweep's pieces dealt out over the processes of a group, one records file
per rank while it runs, merged by rank 0; a sweep stopped on any rank resumes from what every rank wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import eval.sweep as sweep_module
from eval.records import append_records, read_records
from eval.samples import read_samples, samples_path
from eval.sweep import SweepTarget, records_path, shard_path, sweep
from tests.cli import TINY, run_cli
from tests.test_records_key import _config
from train.tasks import load_task

REPO = Path(__file__).resolve().parents[1]


def test_shards_left_by_a_stopped_sweep_count_as_done_and_are_merged(tmp_path, text_model, monkeypatch):
    """A 2-process sweep stopped after rank 1 finished its pieces and rank 0 one of its two: one process
    resumes it, samples only the missing piece, and ends with the same records as an uninterrupted sweep."""
    cfg = _config(tmp_path)  # 2 problems, one per piece
    targets = [SweepTarget("base", None, str(text_model)), SweepTarget("other", None, str(text_model))]
    problems = load_task(cfg.task, "test")
    whole = sweep(records_path(tmp_path / "whole", cfg), targets, problems, cfg, progress=False)
    pieces = [[r] for r in whole]  # (base, p0), (base, p1), (other, p0), (other, p1): dealt out round-robin
    assert [(r.model, r.problem_id) for [r] in pieces] == [("base", "0"), ("base", "1"), ("other", "0"), ("other", "1")]

    path = records_path(tmp_path / "stopped", cfg)
    append_records(shard_path(path, 1), pieces[1] + pieces[3])  # rank 1: both of its pieces
    append_records(shard_path(path, 0), pieces[0])  # rank 0: stopped before its second
    sampled = []
    real = sweep_module._sample_chunk
    monkeypatch.setattr(sweep_module, "_sample_chunk", lambda out, target, chunk, *a: sampled.append(
        (out.name, target.model, [p.id for _, p in chunk])) or real(out, target, chunk, *a))  # fmt: skip
    resumed = sweep(path, targets, problems, cfg, progress=False)
    assert sampled == [(path.name, "other", ["0"])]  # the one piece no rank had finished, into the main file
    by_key = lambda records: sorted(records, key=lambda r: (r.model, r.problem_id))  # noqa: E731
    assert by_key(resumed) == by_key(whole)
    assert not list(path.parent.glob("*.rank*"))  # the shards were merged and removed


@pytest.mark.distributed
def test_two_processes_sweep_what_one_does(tmp_path, tiny_cache):
    """``rlvr-eval`` under ``accelerate launch`` with 2 processes: the same records and kept samples as one
    process (pieces are seeded by their first problem, whoever samples them), merged into one file."""
    args = ["base_only=true", f"model.cache_dir={tiny_cache}", *TINY, "eval.n=8", "eval.num_problems=24",
            "eval.batch_size=32", "eval.keep_samples=2", "eval.perplexity=false", "eval.bootstrap_resamples=200"]  # fmt: skip
    one = run_cli("rlvr-eval", [*args, f"run_dir={tmp_path / 'one'}"], cwd=tmp_path, timeout=600)  # builds the base once
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env.update(OMP_NUM_THREADS="1", WANDB_MODE="disabled", PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    two = subprocess.run(["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--mixed_precision", "no",
                          "--dynamo_backend", "no", "--main_process_port", "0", "-m", "eval.main", *args,
                          f"run_dir={tmp_path / 'two'}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-4000:]

    (one_file,) = (tmp_path / "one" / "eval").glob("records_*.jsonl")
    (two_file,) = (tmp_path / "two" / "eval").glob("records_*.jsonl")  # one file: no shard left beside it
    strip = lambda records: sorted((r.model, r.problem_id, r.n, r.correct) for r in records)  # noqa: E731  paths differ
    one, both = strip(read_records(one_file)), strip(read_records(two_file))
    assert len(one) == 24 and one == both
    assert 0 < sum(c for *_, c in one) < 24 * 8  # verdicts vary: equality says something
    texts = lambda file: sorted((s.problem_id, s.completions) for s in read_samples(samples_path(file)))  # noqa: E731
    assert texts(one_file) == texts(two_file)
    assert two.stdout.count("report: ") == 1  # rank 0 alone reports
    assert (tmp_path / "two" / "eval" / "summary.json").exists()
