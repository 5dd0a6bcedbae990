"""Multirun comparison: grouping by what was swept (seeds pooled), numbers against the runs' records, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eval.compare import RunResult, compare, group_runs
from eval.records import Record
from eval.summarize import SummaryError


def _run(name: str, overrides: list[str], seed: int, correct: dict[int, list[int]], base=(1, 0, 3, 0), n=4) -> RunResult:
    tags = [{"class": "H" if i % 2 else "rest"} for i in range(len(base))]
    records = [Record("base", None, "/base", f"p{i}", n, c, tags=tags[i]) for i, c in enumerate(base)]
    records += [Record(f"step_{s:06d}", s, f"/{name}/{s}", f"p{i}", n, c) for s, cs in correct.items() for i, c in enumerate(cs)]
    summary = {"task": "t", "n": n, "k_max": n, "num_problems": len(base), "base": {"path": "/base"},
               "checkpoints": [{"step": s} for s in correct]}  # fmt: skip
    return RunResult(Path(name), tuple(overrides), seed, summary, tuple(records))


def test_groups_are_what_was_swept_with_seeds_pooled():
    common = ["trainer.total_steps=4", "model.cache_dir=/c"]
    runs = [_run("0", ["algorithm=grpo", "seed=0", *common], 0, {4: [2, 0, 4, 0]}),
            _run("1", ["algorithm=grpo", "seed=1", *common], 1, {4: [3, 1, 4, 0]}),
            _run("2", ["algorithm=rloo", "algorithm.kl_coef=0.01", "seed=0", *common], 0, {4: [1, 0, 4, 0]}),
            _run("3", ["algorithm=rloo", "seed=0", *common], 0, {4: [1, 0, 4, 1]})]  # fmt: skip
    groups = group_runs(runs)
    assert list(groups) == ["algorithm=grpo", "algorithm=rloo algorithm.kl_coef=0.01", "algorithm=rloo"]
    assert [r.folder.name for r in groups["algorithm=grpo"]] == ["0", "1"]


def test_comparison_numbers_follow_the_records():
    runs = [_run("a", ["algorithm=grpo", "seed=0"], 0, {2: [1, 1, 3, 0], 4: [2, 0, 4, 0]}),
            _run("b", ["algorithm=grpo", "seed=1"], 1, {2: [1, 0, 3, 0], 4: [4, 0, 4, 0]}),
            _run("c", ["algorithm=distill", "seed=0"], 0, {2: [1, 1, 3, 1], 4: [1, 2, 2, 1]})]  # fmt: skip
    result = compare(runs, resamples=500, seed=0)
    grpo, distill = result["groups"]
    assert (grpo["label"], grpo["step"], grpo["seeds"]) == ("algorithm=grpo", 4, [0, 1])
    # pass@1 of the pooled row: the mean over seeds and problems of c / n at the last step
    assert grpo["pass_at_k"][1] == pytest.approx(np.mean([2, 0, 4, 0, 4, 0, 4, 0]) / 4)
    assert [r["step"] for r in grpo["over_steps"]] == [2, 4]
    assert result["base"]["pass_at_k"][4] == pytest.approx(0.5)  # two of four problems solved
    assert distill["pass_at_k"][4] == pytest.approx(1.0) and distill["diff_vs_base"][4]["mean"] == pytest.approx(0.5)
    assert distill["overlap"] == {"both": 2, "base_only": 0, "rl_only": 2, "neither": 0}  # single seed: overlap
    assert "overlap" not in grpo  # a mean over seeds solves no problem by itself
    assert grpo["delta_se"] == pytest.approx(0.5 - grpo["pass_at_k"][1])
    assert compare(runs, resamples=500, seed=0) == result  # seeded
    # per tag value: the same comparison over those problems alone (p1, p3 are class H; the base solves neither)
    hard = result["subsets"]["class"]["H"]
    assert hard["num_problems"] == 2 and hard["base"]["pass_at_k"][4] == 0.0
    assert [g["pass_at_k"][4] for g in hard["groups"]] == [pytest.approx(0.0), pytest.approx(1.0)]


def test_runs_of_other_bases_or_settings_are_refused():
    one = _run("a", ["algorithm=grpo"], 0, {2: [1, 1, 1, 1]})
    other_base = _run("b", ["algorithm=rloo"], 0, {2: [1, 1, 1, 1]}, base=(0, 0, 0, 0))
    with pytest.raises(SummaryError, match="different base models or problems"):
        compare([one, other_base], resamples=100)
    other_n = _run("c", ["algorithm=rloo"], 0, {2: [1, 1, 1, 1]}, n=8)
    with pytest.raises(SummaryError, match="differ in n"):
        compare([one, other_n], resamples=100)
    unswept = _run("d", ["algorithm=rloo"], 0, {})
    with pytest.raises(SummaryError, match="share no evaluated checkpoint"):
        compare([one, unswept], resamples=100)
