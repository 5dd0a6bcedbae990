"""Behaviour: the default miniature study, exactly as `rlvr-train` runs it with no arguments.

RL must lift pass@1 on the test split above the base model's. Slow (minutes): marked ``slow``.
The built-in base model is built in the default cache (~/.cache/rlvr) on first use and reused.
"""

import pytest

from eval.summarize import load_summary
from tests.cli import run_cli


@pytest.mark.slow
def test_default_study_rl_beats_base_at_pass1(tmp_path):
    run_dir = tmp_path / "study"
    proc = run_cli("rlvr-train", [f"run_dir={run_dir}"], cwd=tmp_path, timeout=1800)
    summary = load_summary(run_dir / "eval" / "summary.json")
    base, last = summary["base"]["pass_at_k"], summary["checkpoints"][-1]["pass_at_k"]
    print(proc.stdout[-4000:])
    assert summary["n"] == 256 and summary["k_max"] == 256
    assert last[1] > base[1] + 0.10, f"RL pass@1 {last[1]:.3f} vs base {base[1]:.3f}"
    assert 0.05 <= base[1] <= 0.5, f"base pass@1 {base[1]:.3f} leaves the study no room"
    assert base[summary["k_max"]] > base[1] + 0.2, "the base's pass@k must rise well above its pass@1"
