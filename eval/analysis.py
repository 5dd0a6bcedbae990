"""The paper's per-problem analyses, from records alone: solvable-problem overlap with McNemar's test,
accuracy histograms, per-subset pass@k, and the verdict a pass@k comparison supports.

Yue et al. 2025 (arXiv 2504.13837): Tables 4-5 count the problems each model solves (at least one
correct sample of n) and those only one of them solves; Fig. 5 compares per-problem accuracy
histograms of the base and the RL model. McNemar's exact test asks whether the base-only and
RL-only counts differ by more than chance (the problems both or neither solve say nothing about
the difference). Pure: numpy and scipy, no I/O.
"""

from __future__ import annotations

from typing import Mapping, Sequence, TypedDict

import numpy as np
from scipy.stats import binomtest

from eval.bootstrap import crossing, interval


class Overlap(TypedDict):
    both: int  # problems both models solve (at least one correct sample of n)
    base_only: int  # problems only the base solves
    rl_only: int  # problems only the other model solves
    neither: int


def overlap(base_correct: np.ndarray, model_correct: np.ndarray) -> Overlap:
    """Solvable-problem counts from per-problem correct counts (P,), paired by position.

    >>> overlap(np.array([0, 3, 1, 0]), np.array([2, 5, 0, 0]))
    {'both': 1, 'base_only': 1, 'rl_only': 1, 'neither': 1}
    """
    base, model = np.asarray(base_correct) > 0, np.asarray(model_correct) > 0
    return Overlap(both=int(np.sum(base & model)), base_only=int(np.sum(base & ~model)),
                   rl_only=int(np.sum(~base & model)), neither=int(np.sum(~base & ~model)))  # fmt: skip


def mcnemar_p(counts: Overlap) -> float:
    """Two-sided exact McNemar p-value of base-only against RL-only problems (1.0 when both are 0).

    >>> round(mcnemar_p({"both": 30, "base_only": 8, "rl_only": 1, "neither": 1}), 4)  # 2 * P(X <= 1), X ~ Bin(9, 1/2)
    0.0391
    """
    discordant = counts["base_only"] + counts["rl_only"]
    if discordant == 0:
        return 1.0
    return float(binomtest(counts["rl_only"], discordant, 0.5).pvalue)


HISTOGRAM_BINS = ("0", "(0,10%]", "(10,20%]", "(20,30%]", "(30,40%]", "(40,50%]", "(50,60%]", "(60,70%]",
                  "(70,80%]", "(80,90%]", "(90,100%)", "100%")  # fmt: skip


def accuracy_histogram(n: np.ndarray, correct: np.ndarray) -> list[int]:
    """Problems per accuracy bin (:data:`HISTOGRAM_BINS`): exactly 0, ten bins of 10%, exactly 1 (paper Fig. 5).

    >>> accuracy_histogram(np.array([10] * 5), np.array([0, 1, 5, 9, 10]))
    [1, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1]
    """
    accuracy = np.asarray(correct, dtype=float) / np.asarray(n, dtype=float)
    inner = np.clip(np.ceil(accuracy * 10).astype(int), 1, 10)  # (0, .1] -> 1, ..., (.9, 1) -> 10
    bins = np.where(accuracy == 0, 0, np.where(accuracy == 1, 11, inner))
    return np.bincount(bins, minlength=len(HISTOGRAM_BINS)).tolist()


class Verdict(TypedDict):
    rl_above: list[int]  # k where the model is significantly above the base (the interval of model - base > 0)
    base_above: list[int]  # k where the base is significantly above the model
    crossing: dict | None  # {"k": mean curves' crossing, "ci": [lo, hi], "share": replicates that cross}; None if the mean curves never cross
    text: str  # one line saying the above


def verdict(name: str, ks: Sequence[int], diff_mean: np.ndarray, diff_replicates: np.ndarray, level: float) -> Verdict:
    """What a paired bootstrap of ``model - base`` (``diff_replicates``: (B, K)) supports, per k.

    A k counts as significant when the ``level`` interval of the difference excludes 0 (marginal
    intervals, one per k, not corrected for looking at several k).
    """
    lo, hi = interval(diff_replicates, level)
    rl_above = [k for k, low in zip(ks, lo) if low > 0]
    base_above = [k for k, high in zip(ks, hi) if high < 0]
    at = float(crossing(np.asarray(diff_mean), list(ks)))
    crossed = None
    if not np.isnan(at):
        per_replicate = crossing(diff_replicates, list(ks))
        share = float(np.mean(~np.isnan(per_replicate)))
        bounds = interval(per_replicate[~np.isnan(per_replicate)], level) if share > 0 else np.array([at, at])
        crossed = {"k": at, "ci": [float(bounds[0]), float(bounds[1])], "share": share}
    return Verdict(rl_above=rl_above, base_above=base_above, crossing=crossed,
                   text=_verdict_text(name, list(ks), rl_above, base_above, crossed, level))  # fmt: skip


def _verdict_text(name: str, ks: list[int], rl_above: list[int], base_above: list[int], crossed: dict | None,
                  level: float) -> str:  # fmt: skip
    """One line, e.g. "step_200: above the base for k <= 4, below the base for k >= 64; curves cross at k = 11 [6, 19]"."""
    parts = []
    if rl_above:
        parts.append(f"above the base for {describe_ks(rl_above, ks)}")
    if base_above:
        parts.append(f"below the base for {describe_ks(base_above, ks)}")
    if not parts:
        parts.append(f"no k where it differs significantly from the base ({100 * level:g}% paired bootstrap)")
    text = f"{name}: " + ", ".join(parts)
    if crossed is not None:
        lo, hi = crossed["ci"]
        text += f"; curves cross at k = {crossed['k']:.0f} [{lo:.0f}, {hi:.0f}]"
        if crossed["share"] < 0.995:
            text += f" (in {100 * crossed['share']:.0f}% of resamples)"
    return text


def describe_ks(ks: list[int], all_ks: Sequence[int]) -> str:
    """A set of k from the grid ``all_ks`` in words: a run from the grid's start or to its end reads as <= / >=.

    >>> describe_ks([1, 2, 4], [1, 2, 4, 8]), describe_ks([4, 8], [1, 2, 4, 8]), describe_ks([2, 4], [1, 2, 4, 8])
    ('k <= 4', 'k >= 4', 'k in [2, 4]')
    >>> describe_ks([1, 2, 4, 8], [1, 2, 4, 8]), describe_ks([1, 8], [1, 2, 4, 8]), describe_ks([2], [1, 2, 4])
    ('every k (1 to 8)', 'k in {1, 8}', 'k = 2')
    """
    positions = [list(all_ks).index(k) for k in ks]
    contiguous = positions == list(range(positions[0], positions[-1] + 1))
    if len(ks) == len(all_ks):
        return f"every k ({ks[0]} to {ks[-1]})"
    if len(ks) == 1:
        return f"k = {ks[0]}"
    if contiguous and positions[0] == 0:
        return f"k <= {ks[-1]}"
    if contiguous and positions[-1] == len(all_ks) - 1:
        return f"k >= {ks[0]}"
    if contiguous:
        return f"k in [{ks[0]}, {ks[-1]}]"
    return f"k in {{{', '.join(map(str, ks))}}}"


def subset_ids(tags: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, list[str]]]:
    """tag name -> tag value -> problem ids, from problem id -> tags (problems without a tag are left out).

    >>> subset_ids({"p1": {"level": "1"}, "p2": {"level": "2"}, "p3": {"level": "1", "src": "a"}})
    {'level': {'1': ['p1', 'p3'], '2': ['p2']}, 'src': {'a': ['p3']}}
    """
    out: dict[str, dict[str, list[str]]] = {}
    for pid, problem_tags in tags.items():
        for name, value in problem_tags.items():
            out.setdefault(name, {}).setdefault(value, []).append(pid)
    return {name: dict(sorted(values.items())) for name, values in sorted(out.items())}
