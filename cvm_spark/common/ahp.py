"""The analytic hierarchy process (AHP, seed 001: 层次分析法): weights from a pairwise
comparison matrix, and how consistent its judgements are.

A judgement ``a[i][j]`` says how much more important criterion ``i`` is than ``j`` on
Saaty's 1..9 scale (``1/3``: ``j`` is moderately more important). The matrix is positive
and reciprocal (``a[j][i] = 1 / a[i][j]``, ``a[i][i] = 1``). The weights are its principal
(Perron) eigenvector, normalised to sum to 1; ``lambda_max`` is its eigenvalue. Judgements
that agree with each other give ``lambda_max = n``; the consistency index is
``CI = (lambda_max - n) / (n - 1)`` and the consistency ratio ``CR = CI / RI(n)``, with
Saaty's random index ``RI``. ``CR < 0.10`` is the usual acceptance threshold.

Pure Python (no numpy, no Spark): the config checks a matrix before Spark starts.
docs/model.md ("AHP weights") has the formulas and a worked example.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

# Saaty's random consistency index RI(n) (Saaty 1980, n = 1..10): the mean CI of random
# reciprocal matrices. n = 1, 2 are always consistent.
RANDOM_INDEX = (0.0, 0.0, 0.58, 0.90, 1.12, 1.24, 1.32, 1.41, 1.45, 1.49)
MAX_CRITERIA = len(RANDOM_INDEX)
MAX_CONSISTENCY_RATIO = 0.10
# a typed lower triangle may round the reciprocal (0.33 for 1/3): this relative slack
RECIPROCAL_TOLERANCE = 0.02
_ITERATIONS = 10_000
_CONVERGED = 1e-15


@dataclass(frozen=True)
class AhpResult:
    """Weights and consistency of a pairwise comparison matrix.

    Attributes:
        weights: the principal eigenvector, summing to 1, in criteria order.
        lambda_max: its eigenvalue (``>= n``; ``= n`` for a consistent matrix).
        consistency_index: ``(lambda_max - n) / (n - 1)`` (0 for n <= 2).
        consistency_ratio: ``CI / RI(n)`` (0 for n <= 2).
        worst_pair: ``(i, j)`` of the judgement that departs most from the weights
            (largest ``|log(a[i][j] * w[j] / w[i])|``, i < j); None when all agree.
        worst_ratio: ``a[i][j] / (w[i] / w[j])`` for that pair.
    """

    weights: tuple[float, ...]
    lambda_max: float
    consistency_index: float
    consistency_ratio: float
    worst_pair: tuple[int, int] | None
    worst_ratio: float

    @property
    def consistent(self) -> bool:
        return self.consistency_ratio < MAX_CONSISTENCY_RATIO


def judgement(value: Any) -> float:
    """A judgement as a number: ``3``, ``0.5`` or a fraction string ``"1/3"``.

    Raises:
        ValueError: not a positive number or fraction.
    """
    if isinstance(value, bool):
        raise ValueError(f"judgement must be a positive number or a fraction like '1/3', "
                         f"got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(Fraction(value.strip()))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"judgement must be a positive number or a fraction like '1/3', "
                             f"got {value!r}") from None
    else:
        raise ValueError(f"judgement must be a positive number or a fraction like '1/3', "
                         f"got {value!r}")
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"judgement must be a positive number, got {value!r}")
    return number


def pairwise_matrix(rows: list[list[Any]]) -> list[list[float]]:
    """The reciprocal matrix of typed rows: ones on the diagonal; the upper triangle as
    typed, the lower triangle its exact reciprocals (a typed lower triangle must agree with
    them to ``RECIPROCAL_TOLERANCE``).

    Raises:
        ValueError: not square, a size outside 1..MAX_CRITERIA, a diagonal entry other
            than 1, a bad number, or a lower-triangle entry that is not the reciprocal.
    """
    n = len(rows)
    if not 1 <= n <= MAX_CRITERIA:
        raise ValueError(f"pairwise must have 1..{MAX_CRITERIA} rows, got {n}")
    if any(not isinstance(r, list) or len(r) != n for r in rows):
        raise ValueError(f"pairwise must be a square matrix of {n} rows of {n} judgements")
    a = [[judgement(v) for v in row] for row in rows]
    for i in range(n):
        if abs(a[i][i] - 1.0) > 1e-12:
            raise ValueError(f"pairwise[{i}][{i}] must be 1 (a criterion against itself), "
                             f"got {rows[i][i]!r}")
        for j in range(i + 1, n):
            if abs(a[j][i] * a[i][j] - 1.0) > RECIPROCAL_TOLERANCE:
                raise ValueError(f"pairwise[{j}][{i}] = {rows[j][i]!r} must be the reciprocal "
                                 f"of pairwise[{i}][{j}] = {rows[i][j]!r}")
            a[j][i] = 1.0 / a[i][j]
    return a


def ahp(matrix: list[list[float]]) -> AhpResult:
    """Principal eigenvector (power iteration from the row geometric means) and consistency
    of a positive reciprocal matrix (:func:`pairwise_matrix`)."""
    n = len(matrix)
    w = [math.prod(row) ** (1.0 / n) for row in matrix]
    total = sum(w)
    w = [x / total for x in w]
    for _ in range(_ITERATIONS):
        aw = [sum(a * x for a, x in zip(row, w, strict=True)) for row in matrix]
        total = sum(aw)
        new = [x / total for x in aw]
        done = max(abs(a - b) for a, b in zip(new, w, strict=True)) < _CONVERGED
        w = new
        if done:
            break
    # with sum(w) = 1, A w = lambda w gives lambda = sum(A w)
    lambda_max = sum(sum(a * x for a, x in zip(row, w, strict=True)) for row in matrix)
    ci = (lambda_max - n) / (n - 1) if n > 2 else 0.0
    cr = ci / RANDOM_INDEX[n - 1] if n > 2 else 0.0
    worst, worst_ratio, worst_log = None, 1.0, 1e-9
    for i in range(n):
        for j in range(i + 1, n):
            ratio = matrix[i][j] * w[j] / w[i]
            if abs(math.log(ratio)) > worst_log:
                worst, worst_ratio, worst_log = (i, j), ratio, abs(math.log(ratio))
    return AhpResult(tuple(w), lambda_max, max(ci, 0.0), max(cr, 0.0), worst, worst_ratio)


def consistency_problem(result: AhpResult, criteria: list[str],
                        rows: list[list[Any]]) -> str | None:
    """None when ``CR < MAX_CONSISTENCY_RATIO``, else a message that names the CR and the
    most inconsistent judgement."""
    if result.consistent:
        return None
    i, j = result.worst_pair if result.worst_pair else (0, 1)
    implied = result.weights[i] / result.weights[j]
    return (f"consistency ratio {result.consistency_ratio:.3f} is not below "
            f"{MAX_CONSISTENCY_RATIO} (lambda_max {result.lambda_max:.4f} for "
            f"{len(criteria)} criteria); the most inconsistent judgement is "
            f"{criteria[i]} vs {criteria[j]} (pairwise[{i}][{j}] = {rows[i][j]!r}, while the "
            f"other judgements imply {implied:.3g}): revise it")
