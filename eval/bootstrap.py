"""Paired bootstrap intervals for pass@k: how much of a difference between two models is the problems drawn.

A sweep measures every model on the same problems, so the problems are the unit of resampling
(Efron & Tibshirani 1993, ch. 13; the paired design of Dror et al. 2018, "The Hitchhiker's Guide to
Testing Statistical Significance in NLP"): each replicate draws P problem ids with replacement and
averages every model's per-problem pass@k over the *same* draw, so base and checkpoint keep their
pairing and the difference's interval is far narrower than the two marginal intervals suggest.
Intervals are percentile intervals of the replicates. With several seeds of one configuration the
resampling has two levels (:func:`two_level_means`): seeds first, then problems.

Pure numpy; everything is seeded, so an interval is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eval.passk import pass_at_k


@dataclass(frozen=True)
class Resampling:
    """``counts[b, i]``: how often problem i is drawn in replicate b (each row sums to P)."""

    counts: np.ndarray  # (B, P) int

    @classmethod
    def draw(cls, num_problems: int, resamples: int, seed: int) -> "Resampling":
        """``resamples`` draws of ``num_problems`` problem ids with replacement, seeded.

        >>> Resampling.draw(3, 4, seed=0).counts.sum(axis=1).tolist()
        [3, 3, 3, 3]
        """
        if num_problems < 1 or resamples < 1:
            raise ValueError(f"need at least one problem and one resample, got {num_problems} and {resamples}")
        rng = np.random.default_rng(seed)
        return cls(rng.multinomial(num_problems, np.full(num_problems, 1.0 / num_problems), size=resamples))

    def means(self, values: np.ndarray) -> np.ndarray:
        """Per-replicate means of per-problem ``values`` (P, ...) -> (B, ...).

        >>> Resampling(np.array([[2, 0], [1, 1]])).means(np.array([1.0, 3.0])).tolist()
        [1.0, 2.0]
        """
        values = np.asarray(values, dtype=float)
        flat = values.reshape(values.shape[0], -1)
        return (self.counts @ flat / self.counts.shape[1]).reshape((self.counts.shape[0], *values.shape[1:]))


def interval(replicates: np.ndarray, level: float) -> np.ndarray:
    """Percentile interval over axis 0: (2, ...) with the lower and upper bound.

    >>> interval(np.arange(101.0), 0.9).round(6).tolist()
    [5.0, 95.0]
    """
    if not 0 < level < 1:
        raise ValueError(f"ci level must lie in (0, 1), got {level}")
    tail = (1 - level) / 2
    return np.quantile(replicates, [tail, 1 - tail], axis=0)


def passk_matrix(n: np.ndarray, correct: np.ndarray, ks: list[int]) -> np.ndarray:
    """Per-problem pass@k, (P, K), by the unbiased estimator (:func:`eval.passk.pass_at_k`)."""
    return np.stack([pass_at_k(np.asarray(n), np.asarray(correct), k) for k in ks], axis=1).astype(float)


def seed_draws(num_seeds: int, resamples: int, seed: int) -> np.ndarray:
    """(B, S) counts of each seed in each replicate: S seeds drawn with replacement, seeded."""
    rng = np.random.default_rng([seed, 1])  # a stream of its own, apart from the problems' draw
    return rng.multinomial(num_seeds, np.full(num_seeds, 1.0 / num_seeds), size=resamples)


def two_level_means(values: np.ndarray, problems: Resampling, seeds: np.ndarray) -> np.ndarray:
    """Two-level bootstrap of a mean over seeds and problems: (S, P, ...) -> (B, ...).

    Replicate b weights seed s by ``seeds[b, s]`` and problem i by ``problems.counts[b, i]``: one
    problem draw shared by every seed (every seed was measured on the same problems), and by the
    base when the caller uses the same ``problems`` for it, so differences stay paired.
    """
    values = np.asarray(values, dtype=float)
    num_seeds, num_problems = values.shape[:2]
    flat = values.reshape(num_seeds, num_problems, -1)
    out = np.einsum("bs,bp,spk->bk", seeds, problems.counts, flat) / (num_seeds * num_problems)
    return out.reshape((seeds.shape[0], *values.shape[2:]))


def seed_replicates(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """:func:`two_level_means` with its own draws of seeds and problems: (S, P, ...) -> (B, ...)."""
    values = np.asarray(values)
    problems = Resampling.draw(values.shape[1], resamples, seed)
    return two_level_means(values, problems, seed_draws(values.shape[0], resamples, seed))


def crossing(diff: np.ndarray, ks: list[int]) -> np.ndarray:
    """Where a difference curve (model - base over ``ks``) first turns from > 0 to <= 0: the k at
    which the base catches up, interpolated linearly in log2 k; NaN when it never does (never above,
    or never caught). ``diff`` is (..., K); the result has its leading shape.

    >>> crossing(np.array([0.2, 0.1, -0.1, -0.3]), [1, 2, 4, 8]).round(3).tolist()
    2.828
    >>> np.isnan(crossing(np.array([[0.2, 0.1], [-0.1, 0.3]]), [1, 2])).tolist()
    [True, True]
    """
    diff = np.asarray(diff, dtype=float)
    logk = np.log2(np.asarray(ks, dtype=float))
    above = diff > 0
    # the first index i with above[i] and not above[i + 1], provided the curve starts above
    turns = above[..., :-1] & ~above[..., 1:]
    has = above[..., 0] & turns.any(axis=-1)
    first = np.argmax(turns, axis=-1)
    d0 = np.take_along_axis(diff, first[..., None], axis=-1)[..., 0]
    d1 = np.take_along_axis(diff, (first + 1)[..., None], axis=-1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        at = logk[first] + (logk[first + 1] - logk[first]) * d0 / (d0 - d1)
    return np.where(has, 2.0**at, np.nan)
