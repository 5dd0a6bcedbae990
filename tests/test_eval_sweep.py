"""rlvr-train's closing sweep and rlvr-eval: the summary contract, plots, and resuming a sweep."""

import json

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
    for png in ("passk_curves.png", "passk_over_steps.png"):
        assert (run_dir / "eval" / png).read_bytes()[:4] == b"\x89PNG"
    assert "ΔSE" in proc.stdout and "step_000004" in proc.stdout
    # eval results are logged at the checkpoints' training steps
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = {m["train/step"]: m for m in logged if "eval/pass@1" in m}
    assert sorted(evals) == [2, 4]
    assert evals[4]["eval/pass@1"] == pytest.approx(summary["checkpoints"][1]["pass_at_k"][1])


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
