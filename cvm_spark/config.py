"""Typed, validated configuration loaded from ``conf/*.yaml``.

The YAML is read with a ``yaml.SafeLoader`` (no object construction) that also refuses a
key given twice in one mapping and keeps dates as strings, and is mapped onto frozen
dataclasses. A missing or unknown key, a wrong type or an impossible value raises
:class:`ConfigError` naming the key's path (``rfm.bins``, ``features.windows_months[2]``)
before any Spark work starts. The config object is passed down; nothing re-reads the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

if typing.TYPE_CHECKING:  # model configs live next to their code; resolved lazily below
    from cvm_spark.clv import ClvConfig
    from cvm_spark.credit import CreditConfig
    from cvm_spark.elasticity import ElasticityConfig
    from cvm_spark.future_value import FutureValueConfig
    from cvm_spark.loyalty import LoyaltyConfig

CONFIG_VERSION = 1
INPUT_FORMATS = ("parquet", "csv", "delta")


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message names the key path."""


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def parse_month(value: str) -> date:
    """Parse ``YYYY-MM`` (or ``YYYY-MM-01``) into the first day of that month."""
    m = re.fullmatch(r"(\d{4})-(\d{2})(?:-01)?", str(value))
    _check(m is not None, f"expected a month as 'YYYY-MM', got {value!r}")
    assert m is not None
    year, month = int(m.group(1)), int(m.group(2))
    _check(1 <= month <= 12, f"month out of range in {value!r}")
    return date(year, month, 1)


def _parse_date(value: str) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"expected a date as 'YYYY-MM-DD', got {value!r}") from None


@dataclass(frozen=True)
class TableInput:
    """Where one input table is read from (overrides ``inputs.root``/``inputs.format``)."""

    path: str | None = None
    format: str | None = None

    def __post_init__(self) -> None:
        _check(self.format is None or self.format in INPUT_FORMATS,
               f"format must be one of {INPUT_FORMATS}, got {self.format!r}")


@dataclass(frozen=True)
class InputsConfig:
    """Input locations. A table's path defaults to ``<root>/<table name>``."""

    root: str = "data/sample"
    format: str = "parquet"
    csv_header: bool = True
    tables: dict[str, TableInput] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from cvm_spark.schemas import INPUT_TABLES

        _check(self.format in INPUT_FORMATS,
               f"format must be one of {INPUT_FORMATS}, got {self.format!r}")
        unknown = sorted(set(self.tables) - set(INPUT_TABLES))
        _check(not unknown, f"tables has unknown table(s) {unknown}; "
               f"known: {sorted(INPUT_TABLES)}")

    def location(self, table: str) -> tuple[str, str]:
        """Return ``(path, format)`` of an input table."""
        override = self.tables.get(table, TableInput())
        path = override.path or str(Path(self.root) / table)
        return path, override.format or self.format


# Folders the job writes under ``<warehouse>`` besides ``<database>/<table>``: fitted models,
# the catalog's database folder (cvm_spark.delta_io.create_database), the run locks
# (cvm_spark.locking) and the runs' work areas (cvm_spark.workarea).
CATALOG_DIR = "_catalog"
LOCKS_DIR = "_locks"
# a run's intermediate results (cvm_spark.workarea), removed when the run ends
WORK_DIR = "_work"
WAREHOUSE_DIRS = ("_models", CATALOG_DIR, LOCKS_DIR, WORK_DIR)


def _is_uri(path: str) -> bool:
    return "://" in path


@dataclass(frozen=True)
class OutputConfig:
    """Where the Delta tables go and how they are named in the catalog.

    ``warehouse`` is the root of everything the job writes: every write location is built by
    :meth:`location` and refused when it would resolve outside the root (``..``, an absolute
    part, or, for local paths, a symlink inside the warehouse that points elsewhere).
    """

    warehouse: str = "warehouse"
    database: str = "cvm"
    target_file_rows: int = 1_000_000

    def __post_init__(self) -> None:
        _check(bool(self.warehouse.strip()), "warehouse must not be blank")
        _check("\x00" not in self.warehouse, "warehouse must not contain a NUL character")
        _check(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.database) is not None,
               f"database must be a plain SQL identifier, got {self.database!r}")
        _check(self.target_file_rows >= 1000, "target_file_rows must be >= 1000")
        from cvm_spark.tables import TABLE_DESCRIPTIONS

        # symlinks that exist now; write paths are checked again when they are used
        for table in TABLE_DESCRIPTIONS:
            self.location(self.database, table)
        for folder in WAREHOUSE_DIRS:
            self.location(folder)

    def location(self, *parts: str) -> str:
        """``<warehouse>/<parts...>``, refused if it resolves outside the warehouse.

        Local paths come back absolute and resolved (symlinks followed); URIs
        (``hdfs://``, ``s3a://``) as given, checked lexically only.

        Raises:
            ConfigError: a part is empty, ``.``/``..`` or contains a separator, or the
                resolved location is outside the resolved warehouse (a symlink escape).
        """
        for part in parts:
            if not part or part in (".", "..") or any(c in part for c in "/\\\x00"):
                raise ConfigError(f"output: write location part {part!r} under the warehouse "
                                  "must be a plain name")
        if _is_uri(self.warehouse):
            return "/".join([self.warehouse.rstrip("/"), *parts])
        root = Path(self.warehouse).resolve()
        target = root.joinpath(*parts).resolve()
        if not target.is_relative_to(root):
            raise ConfigError(
                f"output.warehouse: {'/'.join(parts)} resolves to {target}, outside the "
                f"warehouse {root} (a symlink pointing out of it?); every write stays inside "
                "output.warehouse")
        return str(target)


@dataclass(frozen=True)
class PerformanceConfig:
    """How a run sizes its Spark work (docs/performance.md, "partitions").

    Attributes:
        shuffle_partitions: partitions of every shuffle of the run; 0 (default) sizes them
            from the inputs: their bytes (files), times the in-memory expansion of their
            format, over ``partition_mb``, rounded up to a multiple of Spark's default
            parallelism (the cores), and at least that.
        partition_mb: target in-memory size of one shuffle partition, in MB.
        broadcast_accounts: the accepted account ids are sent to every task (a broadcast
            join, no shuffle of the event rows) up to this many accounts; above it the
            orphan check joins by shuffling. The same bound applies to the hashes of
            repeated keys that validation marks in a larger table.
    """

    shuffle_partitions: int = 0
    partition_mb: int = 128
    broadcast_accounts: int = 2_000_000

    def __post_init__(self) -> None:
        _check(0 <= self.shuffle_partitions <= 100_000,
               f"shuffle_partitions must be in 0..100000 (0 = from the input size), "
               f"got {self.shuffle_partitions}")
        _check(8 <= self.partition_mb <= 4096,
               f"partition_mb must be in 8..4096, got {self.partition_mb}")
        _check(self.broadcast_accounts >= 0,
               f"broadcast_accounts must be >= 0, got {self.broadcast_accounts}")


PRIVACY_KEY_ENV = "CVM_PSEUDONYM_SECRET"
# privacy keys that exist; any other key there that looks like a secret gets a clear refusal
_PRIVACY_FIELDS = ("pseudonymise", "key_env", "key_file")
_SECRET_LIKE = re.compile(r"key|secret|salt|pepper|password|token", re.IGNORECASE)


@dataclass(frozen=True)
class PrivacyConfig:
    """Pseudonymous account keys for the BI-facing tables (docs/reliability.md, section "privacy").

    The key itself is never part of the config: it is read at the job's edge from the
    environment variable named by ``key_env`` or, when ``key_file`` is set, from that file.
    """

    pseudonymise: bool = False
    key_env: str = PRIVACY_KEY_ENV
    key_file: str | None = None

    def __post_init__(self) -> None:
        # the value is not echoed: a key pasted here by mistake must not reach a log
        # upper case only: a hex or base64 key pasted here by mistake does not pass, so the
        # "variable not set" message (which names key_env) cannot print it
        _check(re.fullmatch(r"[A-Z_][A-Z0-9_]{0,63}", self.key_env) is not None,
               "key_env must be the name of an environment variable (upper-case letters, "
               "digits, _; at most 64), not the key itself")
        _check(self.key_file is None or bool(self.key_file.strip()),
               "key_file must not be blank (leave it out to read key_env)")


@dataclass(frozen=True)
class ValidationConfig:
    """Row-level rules of the data contract (spec section 1)."""

    data_start: str = "2000-01-01"
    product_lines: list[str] = field(default_factory=lambda: [
        "demand_deposit", "time_deposit", "loan", "wealth", "card", "fee_other"])
    directions: list[str] = field(default_factory=lambda: ["credit", "debit"])
    relations: list[str] = field(default_factory=lambda: ["family", "employer"])

    def __post_init__(self) -> None:
        try:
            _parse_date(self.data_start)
        except ValueError as exc:
            raise ValueError(f"data_start: {exc}") from None
        for name in ("product_lines", "directions", "relations"):
            values = getattr(self, name)
            _check(len(values) > 0, f"{name} must not be empty")
            _check(len(set(values)) == len(values), f"{name} has duplicates: {values}")

    @property
    def data_start_date(self) -> date:
        return _parse_date(self.data_start)


@dataclass(frozen=True)
class FeaturesConfig:
    """Window features (spec section 2)."""

    windows_months: list[int] = field(default_factory=lambda: [1, 3, 6, 12])
    trend_months: int = 6
    volatility_months: int = 12
    active_months: int = 12
    purchase_directions: list[str] = field(default_factory=lambda: ["debit"])

    def __post_init__(self) -> None:
        _check(len(self.windows_months) > 0, "windows_months must not be empty")
        _check(len(self.purchase_directions) > 0, "purchase_directions must not be empty")
        for i, w in enumerate(self.windows_months):
            _check(w >= 1, f"windows_months[{i}] must be >= 1 month, got {w}")
            _check(w <= 120, f"windows_months[{i}] must be <= 120 months, got {w}")
        _check(len(set(self.windows_months)) == len(self.windows_months),
               f"windows_months has duplicates: {self.windows_months}")
        _check(2 <= self.trend_months <= 60, "trend_months must be in 2..60")
        _check(2 <= self.volatility_months <= 60, "volatility_months must be in 2..60")
        _check(1 <= self.active_months <= 62, "active_months must be in 1..62")

    @property
    def windows(self) -> list[int]:
        return sorted(self.windows_months)

    @property
    def lookback_months(self) -> int:
        """Months of monthly facts any feature looks at."""
        return max([*self.windows_months, self.trend_months, self.volatility_months,
                    self.active_months])


@dataclass(frozen=True)
class SegmentRule:
    """A named RFM segment: inclusive score ranges ``[low, high]`` for R, F and M."""

    name: str
    r: list[int]
    f: list[int]
    m: list[int]

    def __post_init__(self) -> None:
        _check(bool(self.name.strip()), "name must not be blank")
        for key in ("r", "f", "m"):
            rng = getattr(self, key)
            _check(len(rng) == 2 and rng[0] <= rng[1],
                   f"{key} must be [low, high] with low <= high, got {rng}")

    def matches(self, r: int, f: int, m: int) -> bool:
        return (self.r[0] <= r <= self.r[1] and self.f[0] <= f <= self.f[1]
                and self.m[0] <= m <= self.m[1])


@dataclass(frozen=True)
class RfmConfig:
    """RFM scoring (spec section 3). Segments are tried in order; the first match wins."""

    bins: int = 5
    window_months: int = 12
    relative_error: float = 0.001
    segments: list[SegmentRule] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(2 <= self.bins <= 9, f"bins must be in 2..9, got {self.bins}")
        _check(self.window_months >= 1, f"window_months must be >= 1, got {self.window_months}")
        _check(0 < self.relative_error < 0.1, "relative_error must be in (0, 0.1)")
        _check(len(self.segments) > 0, "segments must not be empty")
        for i, rule in enumerate(self.segments):
            for key in ("r", "f", "m"):
                lo, hi = getattr(rule, key)
                _check(lo >= 1 and hi <= self.bins,
                       f"segments[{i}].{key} {[lo, hi]} outside 1..{self.bins}")
        n = self.bins
        uncovered = [(r, f, m) for r in range(1, n + 1) for f in range(1, n + 1)
                     for m in range(1, n + 1)
                     if not any(rule.matches(r, f, m) for rule in self.segments)]
        _check(not uncovered, f"segments leave {len(uncovered)} score combination(s) "
               f"without a segment, e.g. r,f,m = {uncovered[:3]}")


def _weights_sum_to_one(weights: dict[str, float], name: str) -> None:
    for key, w in weights.items():
        _check(0 <= w <= 1, f"{name}.{key} must be in 0..1, got {w}")
    total = sum(weights.values())
    _check(abs(total - 1) < 1e-9, f"{name} must sum to 1, got {total:.6g}")


@dataclass(frozen=True)
class InfluenceWeights:
    """w1, w2, w3 of influence value = w1*enterprise + w2*family + w3*radiation."""

    enterprise: float = 0.4
    family: float = 0.4
    radiation: float = 0.2


@dataclass(frozen=True)
class ContributionWeights:
    """Weights of the percentile-scaled components in contribution value."""

    historical: float = 0.20
    current: float = 0.55
    influence: float = 0.05
    future: float = 0.20


@dataclass(frozen=True)
class ValueConfig:
    """Current, historical, influence and contribution value (spec section 4)."""

    current_months: int = 12
    decay: float = 0.9
    backfill_months: int = 12
    product_groups: dict[str, list[str]] = field(default_factory=lambda: {
        "savings": ["demand_deposit", "time_deposit"], "loans": ["loan", "card"],
        "wealth": ["wealth"], "other": ["fee_other"]})
    radiation_min_transfers: int = 3
    influence_weights: InfluenceWeights = field(default_factory=InfluenceWeights)
    contribution_weights: ContributionWeights = field(default_factory=ContributionWeights)
    percentile_points: int = 1000

    def __post_init__(self) -> None:
        _check(1 <= self.current_months <= 120, "current_months must be in 1..120")
        _check(0 < self.decay <= 1, f"decay must be in (0, 1], got {self.decay}")
        _check(1 <= self.backfill_months <= 60, "backfill_months must be in 1..60")
        _check(len(self.product_groups) > 0, "product_groups must not be empty")
        for group in self.product_groups:
            _check(re.fullmatch(r"[a-z][a-z0-9_]*", group) is not None,
                   f"product_groups key {group!r} must be a lower-case identifier")
        _check(self.radiation_min_transfers >= 1, "radiation_min_transfers must be >= 1")
        _check(100 <= self.percentile_points <= 10000, "percentile_points must be in 100..10000")
        _weights_sum_to_one(dataclasses.asdict(self.influence_weights), "influence_weights")
        _weights_sum_to_one(dataclasses.asdict(self.contribution_weights),
                            "contribution_weights")


@dataclass(frozen=True)
class AbcConfig:
    """Pareto classes on contribution value: A up to a_share of the cumulative value."""

    a_share: float = 0.80
    b_share: float = 0.95
    points: int = 1000

    def __post_init__(self) -> None:
        _check(0 < self.a_share < self.b_share < 1,
               f"a_share and b_share must satisfy 0 < a_share < b_share < 1, got "
               f"{self.a_share}, {self.b_share}")
        _check(10 <= self.points <= 10000, "points must be in 10..10000")


@dataclass(frozen=True)
class LifecycleConfig:
    """Lifecycle stage rules, tried in the order of the stages below (docs/model.md)."""

    dormant_months: int = 6
    new_months: int = 6
    churn_risk_days: int = 60
    churn_risk_trend: float = -0.10
    growing_trend: float = 0.05
    fluctuating_volatility: float = 0.5

    def __post_init__(self) -> None:
        _check(self.dormant_months >= 1, "dormant_months must be >= 1")
        _check(self.new_months >= 1, "new_months must be >= 1")
        _check(self.churn_risk_days >= 1, "churn_risk_days must be >= 1")
        _check(self.churn_risk_trend < 0 < self.growing_trend,
               "churn_risk_trend must be < 0 < growing_trend")
        _check(self.fluctuating_volatility > 0, "fluctuating_volatility must be > 0")


@dataclass(frozen=True)
class TierRule:
    """A value tier: conditions (empty list = any) and how the bank serves it."""

    name: str
    value_levels: list[str]
    loyalty_bands: list[str]
    credit_grades: list[str]
    channel: str
    service_level: str
    label_en: str
    label_zh: str


@dataclass(frozen=True)
class QuadrantConfig:
    """Labels and strategies of a 2 x 2 matrix, keyed ``<row>_<column>``."""

    labels: dict[str, str]
    strategies: dict[str, str]


@dataclass(frozen=True)
class CampaignCondition:
    """``column op value``; ops: < <= > >= == != in not_in is_null not_null."""

    column: str
    op: str
    value: Any = None

    def __post_init__(self) -> None:
        ops = ("<", "<=", ">", ">=", "==", "!=", "in", "not_in", "is_null", "not_null")
        _check(self.op in ops, f"op must be one of {ops}, got {self.op!r}")
        if self.op in ("in", "not_in"):
            _check(isinstance(self.value, list) and len(self.value) > 0,
                   f"value must be a non-empty list for op {self.op}")
        elif self.op not in ("is_null", "not_null"):
            _check(isinstance(self.value, (int, float, str)) and not isinstance(self.value, bool),
                   f"value must be a number or string for op {self.op}")


@dataclass(frozen=True)
class CampaignRule:
    """A campaign: accounts meeting every condition are targeted, with the reason."""

    name: str
    reason: str
    conditions: list[CampaignCondition]

    def __post_init__(self) -> None:
        _check(len(self.conditions) > 0, "conditions must not be empty")


@dataclass(frozen=True)
class TiersConfig:
    """Classes, stages, tiers, matrices and campaigns (spec section 7)."""

    high_value_pct: float = 80.0
    medium_value_pct: float = 50.0
    good_loyalty_bands: list[str] = field(default_factory=lambda: ["high", "fairly_high"])
    good_credit_grades: list[str] = field(default_factory=lambda: ["A", "B"])
    fair_credit_grades: list[str] = field(default_factory=lambda: ["C"])
    risky_credit_grades: list[str] = field(default_factory=lambda: ["D", "E"])
    no_credit_grade: str = "B"
    credit_grade_column: str = "credit_grade_3m"
    growth_trend: float = 0.0
    abc: AbcConfig = field(default_factory=AbcConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    tiers: list[TierRule] = field(default_factory=list)
    value_risk: QuadrantConfig | None = None
    value_growth: QuadrantConfig | None = None
    campaigns: list[CampaignRule] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(0 < self.medium_value_pct < self.high_value_pct < 100,
               "need 0 < medium_value_pct < high_value_pct < 100")
        _check(len(self.tiers) > 0, "tiers must not be empty")
        last = self.tiers[-1]
        _check(not (last.value_levels or last.loyalty_bands or last.credit_grades),
               f"tiers: the last tier ({last.name}) must have no conditions (it takes the rest)")
        names = [t.name for t in self.tiers]
        _check(len(set(names)) == len(names), f"tiers has duplicate names: {names}")
        for i, tier in enumerate(self.tiers):
            for level in tier.value_levels:
                _check(level in ("high", "medium", "low"),
                       f"tiers[{i}].value_levels: {level!r} is not high, medium or low")
        for key in ("value_risk", "value_growth"):
            quad = getattr(self, key)
            _check(quad is not None, f"{key} is required")
            rows = ("high", "low")
            cols = ("high_risk", "low_risk") if key == "value_risk" else ("high_growth",
                                                                          "low_growth")
            want = {f"{r}_value_{c}" for r in rows for c in cols}
            for part in ("labels", "strategies"):
                got = set(getattr(quad, part))
                _check(got == want, f"{key}.{part} must have exactly the keys {sorted(want)}, "
                       f"got {sorted(got)}")
        names = [c.name for c in self.campaigns]
        _check(len(set(names)) == len(names), f"campaigns has duplicate names: {names}")


@dataclass(frozen=True)
class GeneratorConfig:
    """Synthetic bank data (see docs/generator.md)."""

    accounts: int = 20_000
    months: int = 24
    seed: int = 7
    bad_row_share: float = 0.002
    txn_per_month: float = 3.0
    partitions: int = 0

    def __post_init__(self) -> None:
        _check(self.accounts >= 10, f"accounts must be >= 10, got {self.accounts}")
        _check(3 <= self.months <= 240, f"months must be in 3..240, got {self.months}")
        _check(0 <= self.bad_row_share <= 0.1, "bad_row_share must be in 0..0.1")
        _check(0 < self.txn_per_month <= 100, "txn_per_month must be in (0, 100]")
        _check(self.partitions >= 0, "partitions must be >= 0 (0 = from the data size)")


@dataclass(frozen=True)
class CvmConfig:
    """The whole run configuration."""

    version: int
    snapshot_month: str
    tiers: TiersConfig
    run_seed: int = 42
    inputs: InputsConfig = field(default_factory=InputsConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    rfm: RfmConfig = field(default_factory=RfmConfig)
    value: ValueConfig = field(default_factory=ValueConfig)
    credit: CreditConfig = field(default_factory=lambda: _model_configs()["CreditConfig"]())
    loyalty: LoyaltyConfig = field(default_factory=lambda: _model_configs()["LoyaltyConfig"]())
    elasticity: ElasticityConfig = field(
        default_factory=lambda: _model_configs()["ElasticityConfig"]())
    future_value: FutureValueConfig = field(
        default_factory=lambda: _model_configs()["FutureValueConfig"]())
    clv: ClvConfig = field(default_factory=lambda: _model_configs()["ClvConfig"]())
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    spark: dict[str, str] = field(default_factory=dict)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)

    def __post_init__(self) -> None:
        _check(self.version == CONFIG_VERSION,
               f"version must be {CONFIG_VERSION}, got {self.version}")
        try:
            parse_month(self.snapshot_month)
        except ValueError as exc:
            raise ValueError(f"snapshot_month: {exc}") from None
        _check(self.validation.data_start_date < self.snapshot,
               "validation.data_start must be before snapshot_month")
        unknown = sorted(set(self.features.purchase_directions)
                         - set(self.validation.directions))
        _check(not unknown, f"features.purchase_directions {unknown} are not in "
               f"validation.directions {self.validation.directions}")
        grouped = [pl for lines in self.value.product_groups.values() for pl in lines]
        _check(sorted(grouped) == sorted(self.validation.product_lines),
               "value.product_groups must put every validation.product_lines entry in exactly "
               f"one group (grouped: {sorted(grouped)})")
        _check(self.rfm.window_months in self.features.windows_months,
               f"rfm.window_months ({self.rfm.window_months}) must be one of "
               f"features.windows_months {self.features.windows_months}")
        if self.privacy.pseudonymise:
            from cvm_spark.schemas import ACCOUNT_ID

            on_id = [c.name for c in self.tiers.campaigns
                     if any(cond.column == ACCOUNT_ID for cond in c.conditions)]
            _check(not on_id, f"tiers.campaigns {on_id}: a condition on {ACCOUNT_ID} would put "
                   "raw account ids in campaign_targets.reason; not allowed with "
                   "privacy.pseudonymise")

    @property
    def snapshot(self) -> date:
        """First day of the snapshot month."""
        return parse_month(self.snapshot_month)

    def with_snapshot(self, month: str) -> CvmConfig:
        """Return a copy for another snapshot month (validated like the file)."""
        return _build(CvmConfig, {**to_dict(self), "snapshot_month": month}, "")

    def fingerprint(self) -> str:
        """Stable hash of the effective configuration (recorded with each run)."""
        payload = json.dumps(to_dict(self), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config object (round-trips through :func:`load_config_dict`)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and build nested objects."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], path)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path or 'config'}: expected a mapping, got {value!r}")
        return _build(tp, value, path)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {str(k): _convert(v, val_tp, f"{path}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        # spark settings may be written as numbers or booleans in YAML
        if path.startswith("spark.") and isinstance(value, (int, float, bool)):
            return str(value).lower() if isinstance(value, bool) else str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _model_configs() -> dict[str, type]:
    """Config classes defined in the model modules (imported here to avoid import cycles)."""
    from cvm_spark.clv import ClvConfig
    from cvm_spark.credit import CreditConfig
    from cvm_spark.elasticity import ElasticityConfig
    from cvm_spark.future_value import FutureValueConfig
    from cvm_spark.loyalty import LoyaltyConfig

    return {c.__name__: c for c in (ClvConfig, CreditConfig, ElasticityConfig,
                                    FutureValueConfig, LoyaltyConfig)}


def _build(cls: Any, data: dict[str, Any], path: str) -> Any:
    hints = typing.get_type_hints(cls, localns=_model_configs())
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{path}." if path else ""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (allowed under "
                          f"{path or 'the top level'}: {sorted(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{prefix}{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}{name}: required key is missing")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"{prefix}{exc}") from None


def _refuse_literal_key(data: dict[str, Any]) -> None:
    """Refuse a pseudonym key written into the config (file or ``--set``), value unechoed."""
    privacy = data.get("privacy")
    if not isinstance(privacy, dict):
        return
    for name in privacy:
        if str(name) not in _PRIVACY_FIELDS and _SECRET_LIKE.search(str(name)):
            raise ConfigError(
                f"privacy.{name}: the pseudonym key is never read from the config; put it in "
                "the environment variable named by privacy.key_env (default "
                f"{PRIVACY_KEY_ENV}) or in the file named by privacy.key_file")


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.safe_load`` (no object construction) with two changes for config files.

    * A key given twice in one mapping is an error; PyYAML would keep the last value
      silently, so a second ``bins:`` under ``rfm`` would quietly win.
    * Dates stay strings: ``snapshot_month: 2024-06-01`` and ``data_start: 2000-01-01``
      without quotes are the strings the config expects, not ``datetime.date`` objects.
    """

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _value in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key!r} (first given on line {first + 1})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def parse_yaml(text: str) -> Any:
    """Parse config YAML: safe, duplicate keys refused, dates kept as strings.

    Raises:
        yaml.YAMLError: the text is not valid YAML or repeats a key in a mapping.
    """
    return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass: no objects built


def load_config_dict(data: dict[str, Any]) -> CvmConfig:
    """Validate a plain mapping (as parsed from YAML) into a :class:`CvmConfig`."""
    if not isinstance(data, dict):
        raise ConfigError("config: the file must hold a mapping at the top level")
    _refuse_literal_key(data)
    return _build(CvmConfig, data, "")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> CvmConfig:
    """Load and validate a YAML config file.

    Args:
        path: the YAML file.
        overrides: dotted keys to set after reading, e.g. ``{"snapshot_month": "2024-06"}``.

    Raises:
        ConfigError: the file is missing, not YAML, or fails validation.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = parse_yaml(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the file must hold a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{dotted}: cannot override inside a non-mapping")
        node[leaf] = value
    return load_config_dict(data)
