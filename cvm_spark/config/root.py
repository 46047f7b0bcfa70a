"""The whole run configuration (:class:`CvmConfig`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date

from cvm_spark.config.binding import bind, to_dict
from cvm_spark.config.checks import check, parse_month
from cvm_spark.config.clv import ClvConfig
from cvm_spark.config.credit import CreditConfig
from cvm_spark.config.elasticity import ElasticityConfig
from cvm_spark.config.future_value import FutureValueConfig
from cvm_spark.config.loyalty import LoyaltyConfig
from cvm_spark.config.purchases import PurchaseLogConfig
from cvm_spark.config.segments import TiersConfig
from cvm_spark.config.serving import ThriftConfig
from cvm_spark.config.sources import GeneratorConfig, InputsConfig, ValidationConfig
from cvm_spark.config.stages import (
    FeaturesConfig,
    KpiConfig,
    RfmConfig,
    ValueConfig,
)
from cvm_spark.config.warehouse import OutputConfig, PerformanceConfig, PrivacyConfig
from cvm_spark.schemas.inputs import ACCOUNT_ID

CONFIG_VERSION = 1
# sections that change nothing a run writes: left out of the fingerprint (and so of the
# default run id), so that e.g. a new LDAP server does not make every run a new one
NOT_FINGERPRINTED = ("thrift",)


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
    credit: CreditConfig = field(default_factory=CreditConfig)
    loyalty: LoyaltyConfig = field(default_factory=LoyaltyConfig)
    elasticity: ElasticityConfig = field(default_factory=ElasticityConfig)
    future_value: FutureValueConfig = field(default_factory=FutureValueConfig)
    clv: ClvConfig = field(default_factory=ClvConfig)
    kpi: KpiConfig = field(default_factory=KpiConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    purchases: PurchaseLogConfig | None = None   # a purchase log as input (retail.yaml)
    spark: dict[str, str] = field(default_factory=dict)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)
    thrift: ThriftConfig = field(default_factory=ThriftConfig)

    def __post_init__(self) -> None:
        check(self.version == CONFIG_VERSION,
              f"version must be {CONFIG_VERSION}, got {self.version}")
        try:
            parse_month(self.snapshot_month)
        except ValueError as exc:
            raise ValueError(f"snapshot_month: {exc}") from None
        check(self.validation.event_floor < self.snapshot,
              "validation.data_start must be before snapshot_month")
        if self.purchases is not None:
            self.purchases.check_against(self.validation, self.features)
        unknown = sorted(set(self.features.purchase_directions)
                         - set(self.validation.directions))
        check(not unknown, f"features.purchase_directions {unknown} are not in "
              f"validation.directions {self.validation.directions}")
        grouped = [pl for lines in self.value.product_groups.values() for pl in lines]
        check(sorted(grouped) == sorted(self.validation.product_lines),
              "value.product_groups must put every validation.product_lines entry in exactly "
              f"one group (grouped: {sorted(grouped)})")
        check(self.rfm.window_months in self.features.windows_months,
              f"rfm.window_months ({self.rfm.window_months}) must be one of "
              f"features.windows_months {self.features.windows_months}")
        check(not self.tiers.arpu_classes
              or self.tiers.arpu_class_months in self.features.windows_months,
              f"tiers.arpu_class_months ({self.tiers.arpu_class_months}) must be one of "
              f"features.windows_months {self.features.windows_months}")
        check(self.tiers.dormancy_months in self.features.windows_months,
              f"tiers.dormancy_months ({self.tiers.dormancy_months}) must be one of "
              f"features.windows_months {self.features.windows_months} (the guard reads "
              f"income_{self.tiers.dormancy_months}m)")
        if self.privacy.pseudonymise:
            on_id = [c.name for c in self.tiers.campaigns
                     if any(cond.column == ACCOUNT_ID for cond in c.conditions)]
            check(not on_id, f"tiers.campaigns {on_id}: a condition on {ACCOUNT_ID} would put "
                  "raw account ids in campaign_targets.reason; not allowed with "
                  "privacy.pseudonymise")

    @property
    def snapshot(self) -> date:
        """First day of the snapshot month."""
        return parse_month(self.snapshot_month)

    def with_snapshot(self, month: str) -> CvmConfig:
        """Return a copy for another snapshot month (validated like the file)."""
        return bind(CvmConfig, {**to_dict(self), "snapshot_month": month}, "")

    def fingerprint(self) -> str:
        """Stable hash of the effective configuration (recorded with each run), without the
        sections in ``NOT_FINGERPRINTED``."""
        data = {k: v for k, v in to_dict(self).items() if k not in NOT_FINGERPRINTED}
        payload = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]
