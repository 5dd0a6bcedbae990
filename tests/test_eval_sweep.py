"""rlvr-train's closing sweep and rlvr-eval: the summary contract, plots, and resuming a sweep."""

import json
import re

import pytest

from eval.records import read_records
from eval.summarize import load_summary
from tests.cli import TINY, run_cli

EVAL = ["eval.n=8", "eval.num_problems=6", "eval.batch_size=24"]


@pytest.fixture(scope="module")
def swept_run(tmp_path_factory, tiny_cache):
    root = tmp_path_factory.mktemp("sweep")
    run_dir = root / "run"
    proc = run_cli("rlvr-train", [f"run_dir={run_dir}", f"model.cache_dir={tiny_cache}", *TINY,
                                  "trainer.total_steps=4", "trainer.save_every=2", *EVAL], cwd=root)
    return root, run_dir, proc


def test_main_job_writes_summary_plots_and_table(swept_run):
    root, run_dir, proc = swept_run
    summary = load_summary(run_dir / "eval" / "summary.json")
    assert summary["k_max"] == 8 and summary["n"] == 8 and summary["num_problems"] == 6
    assert sorted(summary["base"]["pass_at_k"]) == [1, 2, 4, 8]
    assert [c["step"] for c in summary["checkpoints"]] == [2, 4]
    for ckpt in summary["checkpoints"]:
        assert ckpt["delta_se"] == pytest.approx(summary["base"]["pass_at_k"][8] - ckpt["pass_at_k"][1])
        curve = [ckpt["pass_at_k"][k] for k in (1, 2, 4, 8)]
        assert curve == sorted(curve)  # pass@k never falls as k grows
    for png in ("passk_curves.png", "passk_over_steps.png", "accuracy_histograms.png", "perplexity.png"):
        assert (run_dir / "eval" / png).read_bytes()[:4] == b"\x89PNG"
    assert "ΔSE" in proc.stdout and "step_000004" in proc.stdout
    assert "6 problems; one problem = 16.7 points" in proc.stdout and "Verdicts (model - base, per k):" in proc.stdout
    for ckpt in summary["checkpoints"]:  # the contract others build on
        assert ckpt["verdict"]["text"].startswith(ckpt["model"]) and ckpt["verdict"]["text"] in proc.stdout
        assert sum(ckpt["overlap"].values()) == 6 and sorted(ckpt["diff_vs_base"]) == [1, 2, 4, 8]
        assert ckpt["delta_se_ci"][0] <= ckpt["delta_se"] <= ckpt["delta_se_ci"][1]
    # perplexity of every model's kept responses, under the base and under itself
    table = json.loads((run_dir / "eval" / "perplexity.json").read_text())["models"]
    assert sorted(table) == ["base", "step_000002", "step_000004"]
    assert all(v["under_base"]["count"] > 0 and v["under_self"]["median"] >= 1.0 for v in table.values())
    # the report: every table with intervals, the verdicts, and figures that exist
    report = (run_dir / "report.md").read_text()
    for section in (": pass@k", ": over training (Table 3)", ": solvable problems (Tables 4-5)", ": per-problem accuracy (Fig. 5)",
                    ": perplexity of responses (Fig. 6)"):  # fmt: skip
        assert f"## arithmetic{section}" in report
    assert summary["checkpoints"][-1]["verdict"]["text"] in report
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", report):
        assert (run_dir / link).read_bytes()[:4] == b"\x89PNG"
    # eval results are logged at the checkpoints' training steps
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = {m["train/step"]: m for m in logged if "eval/pass@1" in m}
    assert sorted(evals) == [2, 4]
    assert evals[4]["eval/pass@1"] == pytest.approx(summary["checkpoints"][1]["pass_at_k"][1])
    assert evals[4]["time/sweep"] > 0 and evals[4]["memory/sweep_peak_gib"] > 0 and "time/sweep" not in evals[2]


def test_interrupted_sweep_resumes_where_it_stopped(swept_run):
    root, run_dir, _ = swept_run
    [records_file] = (run_dir / "eval").glob("records_*.jsonl")
    complete = read_records(records_file)
    assert len(complete) == 3 * 6  # base + 2 checkpoints, 6 problems each
    lines = records_file.read_text().splitlines(keepends=True)
    records_file.write_text("".join(lines[:-4]) + lines[-4][: len(lines[-4]) // 2])  # killed mid-write
    before = json.loads((run_dir / "eval" / "summary.json").read_text())
    run_cli("rlvr-eval", [f"run_dir={run_dir}"], cwd=root)
    resumed = read_records(records_file)
    assert {(r.model, r.problem_id) for r in resumed} == {(r.model, r.problem_id) for r in complete}
    kept = {(r.model, r.problem_id): r.correct for r in resumed}
    for r in complete[:-4]:
        assert kept[(r.model, r.problem_id)] == r.correct  # finished work was not redone
    after = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert after["base"] == before["base"]  # the base's records were all kept


def test_eval_overrides_apply_on_top_of_the_run_config(swept_run):
    root, run_dir, _ = swept_run
    run_cli("rlvr-eval", [f"run_dir={run_dir}", "eval.n=4", "eval.num_problems=3"], cwd=root)
    summary = load_summary(run_dir / "eval" / "summary.json")
    assert summary["n"] == 4 and summary["num_problems"] == 3 and summary["k_max"] == 4


def test_sweep_killed_mid_way_resumes_to_the_uninterrupted_summary(swept_run, tmp_path):
    """kill -9 during a sweep, then rerun: the same summary as a sweep never interrupted, and no (model,
    problem) sampled twice (chunks of one problem: eval.batch_size = eval.n)."""
    import shutil
    import signal
    import subprocess
    import sys
    import time

    root, run_dir, _ = swept_run
    settings = ["eval.n=64", "eval.batch_size=64", "eval.seed=7"]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    for copy in (killed, whole):
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("eval", "wandb"))
    run_cli("rlvr-eval", [f"run_dir={whole}", *settings], cwd=root)

    proc = subprocess.Popen([sys.executable, "-m", "eval.main", f"run_dir={killed}", *settings], cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        files = list((killed / "eval").glob("records_*.jsonl"))
        if files and len(files[0].read_text().splitlines()) >= 4:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [records_file] = (killed / "eval").glob("records_*.jsonl")
    assert 4 <= len(read_records(records_file)) < 3 * 6

    run_cli("rlvr-eval", [f"run_dir={killed}", *settings], cwd=root)
    lines = records_file.read_text().splitlines()
    assert len(lines) == len(read_records(records_file)) == 3 * 6  # nothing measured twice
    resumed, uninterrupted = (json.loads((d / "eval" / "summary.json").read_text()) for d in (killed, whole))
    for summary in (resumed, uninterrupted):
        for model in (summary["base"], *summary["checkpoints"]):
            model.pop("path")
    assert resumed == uninterrupted


def test_eval_logs_curves_with_intervals_to_wandb_offline(swept_run):
    """Each checkpoint's pass@k curve with its interval as a wandb Table (and chart) at its step, offline."""
    root, run_dir, _ = swept_run
    run_cli("rlvr-eval", [f"run_dir={run_dir}", "logger.wandb=true", "logger.mode=offline"], cwd=root)
    tables = sorted((run_dir / "wandb").glob("offline-run-*/files/media/table/eval/passk_curve_table_*.table.json"))
    assert len(tables) == 2  # one per checkpoint
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    rows = json.loads(tables[-1].read_text())
    assert rows["columns"] == ["k", "model", "pass@k", "lo", "hi"]
    last = summary["checkpoints"][-1]
    mine = {row[0]: row[2:] for row in rows["data"] if row[1] == last["model"]}
    assert mine[8] == pytest.approx([last["pass_at_k"]["8"], *last["pass_at_k_ci"]["8"]])
