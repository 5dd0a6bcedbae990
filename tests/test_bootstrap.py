"""Bootstrap intervals, verdicts, overlap counts and the summary contract: against enumeration by hand,
scipy.stats.bootstrap, and identical models (whose differences must be indistinguishable from 0)."""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest
from scipy import stats

from eval import analysis, bootstrap
from eval.analysis import mcnemar_p, overlap, verdict
from eval.bootstrap import Resampling, crossing, interval, passk_matrix, seed_replicates
from eval.records import Record
from eval.summarize import summarize


def test_doctests():
    assert doctest.testmod(bootstrap).failed == 0
    assert doctest.testmod(analysis).failed == 0


def test_three_problems_by_enumeration():
    """All 27 ordered resamples of 3 problems, each equally likely: the exact bootstrap distribution."""
    values = np.array([0.0, 0.5, 1.0])
    every = np.array([np.bincount(draw, minlength=3) for draw in itertools.product(range(3), repeat=3)])
    exact = np.sort(Resampling(every).means(values))
    assert exact.tolist() == sorted(values[list(d)].mean() for d in itertools.product(range(3), repeat=3))
    # the exact distribution: P(mean = 0) = 1/27, so the 2.5% quantile is 1/6 (three draws of 0, 0, 0.5, ...)
    drawn = Resampling.draw(3, 200_000, seed=1).means(values)
    for q in (0.025, 0.25, 0.5, 0.75, 0.975):
        assert np.quantile(drawn, q) == pytest.approx(np.quantile(exact, q, method="inverted_cdf"), abs=1e-9)


def test_paired_interval_matches_scipy():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 40)
    base, model = rng.binomial(64, p), rng.binomial(64, np.clip(p + 0.1, 0, 1))
    ks = [1, 4, 16, 64]
    base_v, model_v = passk_matrix(np.full(40, 64), base, ks), passk_matrix(np.full(40, 64), model, ks)
    draw = Resampling.draw(40, 20_000, seed=3)
    ours = interval(draw.means(model_v) - draw.means(base_v), 0.95)
    for j in range(len(ks)):
        ref = stats.bootstrap((model_v[:, j], base_v[:, j]), lambda a, b, axis: np.mean(a - b, axis=axis),
                              paired=True, vectorized=True, n_resamples=20_000, method="percentile",
                              confidence_level=0.95, random_state=np.random.default_rng(4)).confidence_interval  # fmt: skip
        assert ours[:, j] == pytest.approx([ref.low, ref.high], abs=0.006)
    # pairing matters: the unpaired interval (separate draws) is wider where problems vary (at k = 64, with
    # n = 64, every problem solved once is solved: both intervals are that share's)
    other = Resampling.draw(40, 20_000, seed=5)
    unpaired = interval(draw.means(model_v) - other.means(base_v), 0.95)
    assert np.all((unpaired[1] - unpaired[0])[:3] > (ours[1] - ours[0])[:3])


def test_identical_models_give_intervals_that_contain_zero():
    rng = np.random.default_rng(7)
    p = rng.beta(0.5, 1.5, 60)
    ks = [1, 2, 4, 8, 16, 32]
    values = passk_matrix(np.full(60, 32), rng.binomial(32, p), ks)
    draw = Resampling.draw(60, 4000, seed=0)
    same = draw.means(values)
    assert np.all(interval(same - same, 0.95) == 0)  # the very same records: exactly 0
    result = verdict("twin", ks, values.mean(0) - values.mean(0), same - same, 0.95)
    assert result["rl_above"] == result["base_above"] == [] and result["crossing"] is None
    assert "no k where it differs significantly" in result["text"]


def test_two_sweeps_of_one_model_cover_zero_at_the_stated_rate():
    """Calibration: two independent sweeps of the same model on 60 problems, 400 times; the 95% paired
    interval of their difference should contain 0 about 95% of the time (percentile intervals run a
    little short at this size)."""
    rng = np.random.default_rng(11)
    ks = [1, 4, 16]
    covered = np.zeros(len(ks))
    trials = 400
    for trial in range(trials):
        p = rng.beta(0.5, 1.5, 60)
        one, two = (passk_matrix(np.full(60, 16), rng.binomial(16, p), ks) for _ in range(2))
        draw = Resampling.draw(60, 1000, seed=trial)
        lo, hi = interval(draw.means(one) - draw.means(two), 0.95)
        covered += (lo <= 0) & (0 <= hi)
    assert np.all((covered / trials > 0.90) & (covered / trials < 0.99)), covered / trials


def test_resampling_is_seeded():
    a, b, c = (Resampling.draw(50, 100, seed=s).counts for s in (0, 0, 1))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_two_level_bootstrap_resamples_seeds_then_problems():
    # one problem, two seeds measured 0 and 1: replicates are 0, 1/2, 1 with chances 1/4, 1/2, 1/4
    reps = seed_replicates(np.array([[0.0], [1.0]]), 40_000, seed=0)
    assert np.mean(reps == 0) == pytest.approx(0.25, abs=0.01) and np.mean(reps == 0.5) == pytest.approx(0.5, abs=0.01)
    # seeds that agree: the two-level interval is the one-level one; seeds that disagree widen it
    rng = np.random.default_rng(1)
    values = rng.uniform(0, 1, (1, 80))
    agree = interval(seed_replicates(np.repeat(values, 3, axis=0), 20_000, seed=2), 0.95)
    single = interval(Resampling.draw(80, 20_000, seed=3).means(values[0]), 0.95)
    assert agree == pytest.approx(single, abs=0.01)
    spread = values + np.array([[-0.1], [0.0], [0.1]])
    wide = interval(seed_replicates(spread, 20_000, seed=2), 0.95)
    assert wide[1] - wide[0] > agree[1] - agree[0] + 0.02


def test_crossing_and_verdict_by_hand():
    ks = [1, 2, 4, 8, 16]
    mean = np.array([0.20, 0.10, 0.0, -0.10, -0.20])
    assert crossing(mean, ks) == pytest.approx(4.0)  # d(4) = 0: the base has caught up exactly at k = 4
    replicates = mean + np.linspace(-0.01, 0.01, 101)[:, None]  # a tight spread around the mean curve
    result = verdict("step_100", ks, mean, replicates, 0.95)
    assert result["rl_above"] == [1, 2] and result["base_above"] == [8, 16]
    assert result["crossing"]["k"] == pytest.approx(4.0) and result["crossing"]["share"] == 1.0
    lo, hi = result["crossing"]["ci"]
    assert 2 < lo < 4 < hi < 8
    assert result["text"] == "step_100: above the base for k <= 2, below the base for k >= 8; curves cross at k = 4 [4, 4]"
    assert np.isnan(crossing(np.array([-0.1, -0.2, -0.3, -0.3, -0.3]), ks))  # never above: no crossing
    assert np.isnan(crossing(np.array([0.3, 0.2, 0.1, 0.05, 0.01]), ks))  # never caught


def test_overlap_and_mcnemar_by_hand():
    base = np.array([3, 0, 1, 0, 2, 0, 5])
    model = np.array([8, 1, 0, 0, 0, 0, 1])
    counts = overlap(base, model)
    assert counts == {"both": 2, "base_only": 2, "rl_only": 1, "neither": 2}
    # exact McNemar: 2 * P(X <= 1), X ~ Binomial(3, 1/2) = 2 * 4/8, capped at 1
    assert mcnemar_p(counts) == pytest.approx(1.0)
    assert mcnemar_p({"both": 0, "base_only": 10, "rl_only": 0, "neither": 0}) == pytest.approx(2 / 2**10)


def _records(model: str, step, correct, n=8, tags=None):
    return [Record(model, step, f"/{model}", f"p{i}", n, int(c), task="t", problem_hash=f"h{i}",
                   tags=(tags[i] if tags else {})) for i, c in enumerate(correct)]  # fmt: skip


def test_summary_contract():
    tags = [{"class": "hard" if i % 3 == 0 else "easy"} for i in range(9)]
    base = [0, 1, 2, 8, 0, 4, 0, 3, 1]
    rl = [0, 6, 7, 8, 0, 8, 2, 8, 0]
    summary = summarize(_records("base", None, base, tags=tags) + _records("step_000010", 10, rl, tags=tags),
                        ci_level=0.9, resamples=500, seed=3)  # fmt: skip
    assert (summary["task"], summary["ci_level"], summary["bootstrap_resamples"], summary["bootstrap_seed"]) == ("t", 0.9, 500, 3)
    assert sorted(summary["base"]["pass_at_k_ci"]) == [1, 2, 4, 8]
    [ckpt] = summary["checkpoints"]
    for k in (1, 2, 4, 8):
        lo, hi = ckpt["pass_at_k_ci"][k]
        assert lo <= ckpt["pass_at_k"][k] <= hi
        diff = ckpt["diff_vs_base"][k]
        assert diff["mean"] == pytest.approx(ckpt["pass_at_k"][k] - summary["base"]["pass_at_k"][k])
        assert diff["ci"][0] <= diff["mean"] <= diff["ci"][1]
    assert ckpt["delta_se"] == pytest.approx(summary["base"]["pass_at_k"][8] - ckpt["pass_at_k"][1])
    assert ckpt["delta_se_ci"][0] <= ckpt["delta_se"] <= ckpt["delta_se_ci"][1]
    assert ckpt["overlap"] == {"both": 5, "base_only": 1, "rl_only": 1, "neither": 2}
    assert ckpt["verdict"]["text"].startswith("step_000010: ")
    # accuracies 0 (x3), 1/8 (x2), 2/8, 3/8, 4/8, 8/8
    assert summary["base"]["accuracy_histogram"] == [3, 0, 2, 1, 1, 1, 0, 0, 0, 0, 0, 1]
    hard = summary["subsets"]["class"]["hard"]
    assert hard["num_problems"] == 3 and hard["checkpoints"][0]["overlap"] == {"both": 1, "base_only": 0, "rl_only": 1, "neither": 1}
    # the same records, the same intervals
    again = summarize(_records("base", None, base, tags=tags) + _records("step_000010", 10, rl, tags=tags),
                      ci_level=0.9, resamples=500, seed=3)  # fmt: skip
    assert again == summary
