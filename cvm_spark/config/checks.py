"""Errors and value checks shared by every config class, and month parsing.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from cvm_spark.common.ahp import AhpResult, ahp, consistency_problem, pairwise_matrix


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message names the key path."""


def check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def parse_month(value: str) -> date:
    """Parse ``YYYY-MM`` (or ``YYYY-MM-01``) into the first day of that month."""
    m = re.fullmatch(r"(\d{4})-(\d{2})(?:-01)?", str(value))
    check(m is not None, f"expected a month as 'YYYY-MM', got {value!r}")
    assert m is not None
    year, month = int(m.group(1)), int(m.group(2))
    check(1 <= month <= 12, f"month out of range in {value!r}")
    return date(year, month, 1)


def parse_date(value: str) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"expected a date as 'YYYY-MM-DD', got {value!r}") from None


def ahp_weights(criteria: list[str], pairwise: list[list[Any]]) -> AhpResult:
    """The AHP weights of ``criteria`` from their pairwise comparison matrix (rows and columns
    in ``criteria`` order; :mod:`cvm_spark.common.ahp`).

    Raises:
        ValueError: a malformed matrix, one of another size than ``criteria``, or a
            consistency ratio of 0.10 or more (the message names the CR and the judgement
            to revise).
    """
    check(len(pairwise) == len(criteria),
          f"pairwise must be a {len(criteria)} x {len(criteria)} matrix over {criteria}, got "
          f"{len(pairwise)} rows")
    try:
        matrix = pairwise_matrix(pairwise)
    except ValueError as exc:
        raise ValueError(f"pairwise: {exc}") from None
    result = ahp(matrix)
    problem = consistency_problem(result, criteria, pairwise)
    check(problem is None, f"pairwise: {problem}")
    return result
