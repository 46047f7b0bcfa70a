"""Random numbers from hashes: uniforms from bit slices of ``xxhash64`` of (seed, salt, id),
shaped by inverse-CDF transforms; nothing depends on partitioning or Python's ``random``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F

from cvm_generate.profile import TAU

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Random numbers from hashes
# --------------------------------------------------------------------------------------------
# One xxhash64 gives 64 bits; a hash column is computed once per row in its own select and then
# sliced into up to four independent uniforms. Fewer hash calls keep the generated code small
# enough for the JIT, which is most of the generator's speed.


@dataclass(frozen=True)
class Rng:
    """Counter-based random numbers: every draw is a hash of (seed, salt, key columns)."""

    seed: int

    def hash(self, salt: str, *keys: Column) -> Column:
        """64 random bits per row; slice them with :func:`uniform`, :func:`normal_draw`."""
        return F.xxhash64(F.lit(self.seed), F.lit(salt), *keys)


def uniform(h: Column, part: int = 0, parts: int = 1) -> Column:
    """Uniform on [0, 1) from slice ``part`` of ``parts`` equal bit slices of the hash ``h``."""
    width = 64 // parts
    bits = min(47, width)
    shifted = F.shiftright(h, part * width) if part else h
    return shifted.bitwiseAND(F.lit((1 << bits) - 1)) / float(1 << bits)


def uniform_open(h: Column, part: int = 0, parts: int = 1) -> Column:
    """Uniform on (0, 1), safe for ``log``."""
    return uniform(h, part, parts) + 0.5 / float(1 << min(47, 64 // parts))


def normal_draw(h: Column, part_r: int, part_a: int, parts: int, sine: bool = False) -> Column:
    """Standard normal by Box-Muller; the cosine and sine variants are independent draws."""
    radius = F.sqrt(F.log(uniform_open(h, part_r, parts)) * -2.0)
    angle = uniform(h, part_a, parts) * TAU
    return radius * (F.sin(angle) if sine else F.cos(angle))


def int_between(u: Column, low: Column | int, high: Column | int) -> Column:
    """Uniform integer in ``[low, high]`` from a uniform ``u``."""
    return (F.floor(u * (high - low + 1)) + low).cast("int")


def pick_by_share(u: Column, values: Sequence[str], shares: Sequence[float]) -> Column:
    """Categorical draw: the value whose cumulative share first exceeds ``u``."""
    total = float(sum(shares))
    out, acc = None, 0.0
    for value, share in zip(values[:-1], shares[:-1], strict=True):
        acc += share / total
        out = (F.when(u < acc, F.lit(value)) if out is None
               else out.when(u < acc, F.lit(value)))
    last = F.lit(values[-1])
    return last if out is None else out.otherwise(last)


def per_key(key: Column, mapping: dict[str, float | int | str]) -> Column:
    """Look a per-category constant up (CASE over the category column)."""
    out = None
    for name, value in mapping.items():
        out = (F.when(key == name, F.lit(value)) if out is None
               else out.when(key == name, F.lit(value)))
    assert out is not None
    return out


def lookup_at(values: Sequence[float | str], index: Column) -> Column:
    """Constant array lookup by a 0-based index column (product-line constants)."""
    return F.element_at(F.array(*[F.lit(v) for v in values]), index + 1)


def not_in(candidate: str, taken: Sequence[str]) -> str:
    """``candidate``, suffixed with ``_x`` until it is not one of ``taken``."""
    while candidate in taken:
        candidate += "_x"
    return candidate


def unknown_prefix(lines: Sequence[str]) -> str:
    """A prefix that turns every configured product line into an unknown one."""
    prefix = "retired_"
    while any(prefix + line in lines for line in lines):
        prefix = "x" + prefix
    return prefix


