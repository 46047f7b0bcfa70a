"""Typed, validated configuration loaded from ``conf/*.yaml``.

The YAML is read with a ``yaml.SafeLoader`` (no object construction) that also refuses a
key given twice in one mapping and keeps dates as strings, and is mapped onto frozen
dataclasses. A missing or unknown key, a wrong type or an impossible value raises
:class:`ConfigError` naming the key's path (``rfm.bins``, ``features.windows_months[2]``)
before any Spark work starts. The config object is passed down; nothing re-reads the file.

The package sits below every stage (it imports only ``cvm_spark.common`` and
``cvm_spark.schemas``), so the settings of every stage and model live here, one module per
group of YAML sections:

* ``checks``: :class:`ConfigError`, ``check``, month and date parsing;
* ``sources``: ``inputs``, ``validation``, ``generator``;
* ``purchases``: ``purchases`` (a purchase log as input);
* ``warehouse``: ``output`` (and the warehouse layout), ``performance``, ``privacy``;
* ``serving``: ``thrift`` (who may connect to the JDBC server);
* ``stages``: ``features``, ``rfm``, ``value``, ``tiers``;
* one module per model: ``credit``, ``loyalty``, ``elasticity``, ``future_value``, ``clv``;
* ``root``: :class:`CvmConfig`, the whole file;
* ``binding``: plain data <-> dataclasses (types checked, key paths in the errors);
* ``loader``: YAML files and ``--set`` overrides.

Everything public is importable from ``cvm_spark.config`` itself.
"""

from cvm_spark.config.binding import bind, to_dict
from cvm_spark.config.checks import ConfigError, check, parse_date, parse_month
from cvm_spark.config.clv import DAYS_PER_YEAR, ClvConfig
from cvm_spark.config.credit import ROLLUP_RULES, CreditConfig, GradeCut, ScoreBin, Scorecard
from cvm_spark.config.elasticity import METHODS, ElasticityConfig, ElasticityLabels
from cvm_spark.config.future_value import (
    CLUSTER_TRANSFORMS,
    DEFAULT_FEATURES,
    LOSSES,
    TARGETS,
    BacktestConfig,
    FutureValueConfig,
    source_columns,
)
from cvm_spark.config.loader import load_config, load_config_dict, parse_yaml
from cvm_spark.config.loyalty import LoyaltyBand, LoyaltyConfig, LoyaltyDimension, LoyaltyIndicator
from cvm_spark.config.purchases import LOG_FORMATS, PurchaseLogConfig
from cvm_spark.config.root import CONFIG_VERSION, CvmConfig
from cvm_spark.config.segments import (
    AbcConfig,
    ArpuClass,
    CampaignCondition,
    CampaignRule,
    LifecycleConfig,
    QuadrantConfig,
    RiskCustomersConfig,
    RiskReason,
    TierRule,
    TiersConfig,
)
from cvm_spark.config.serving import (
    THRIFT_AUTHENTICATION,
    KerberosConfig,
    LdapConfig,
    ThriftConfig,
    is_loopback,
)
from cvm_spark.config.sources import (
    GENERATOR_PROFILES,
    INDUSTRY_PROFILES,
    INPUT_FORMATS,
    GeneratorConfig,
    InputsConfig,
    TableInput,
    ValidationConfig,
)
from cvm_spark.config.stages import (
    CONTRIBUTION_PARTS,
    ContributionWeights,
    FeaturesConfig,
    InfluenceWeights,
    KpiConfig,
    RfmConfig,
    SegmentRule,
    ValueConfig,
)
from cvm_spark.config.warehouse import (
    CATALOG_DIR,
    LOCKS_DIR,
    MODELS_DIR,
    PRIVACY_KEY_ENV,
    WAREHOUSE_DIRS,
    WORK_DIR,
    OutputConfig,
    PerformanceConfig,
    PrivacyConfig,
)

__all__ = [
    "CATALOG_DIR",
    "CLUSTER_TRANSFORMS",
    "CONFIG_VERSION",
    "CONTRIBUTION_PARTS",
    "DAYS_PER_YEAR",
    "DEFAULT_FEATURES",
    "GENERATOR_PROFILES",
    "INDUSTRY_PROFILES",
    "INPUT_FORMATS",
    "LOCKS_DIR",
    "LOG_FORMATS",
    "LOSSES",
    "METHODS",
    "MODELS_DIR",
    "PRIVACY_KEY_ENV",
    "ROLLUP_RULES",
    "TARGETS",
    "THRIFT_AUTHENTICATION",
    "WAREHOUSE_DIRS",
    "WORK_DIR",
    "AbcConfig",
    "ArpuClass",
    "BacktestConfig",
    "CampaignCondition",
    "CampaignRule",
    "ClvConfig",
    "ConfigError",
    "ContributionWeights",
    "CreditConfig",
    "CvmConfig",
    "ElasticityConfig",
    "ElasticityLabels",
    "FeaturesConfig",
    "FutureValueConfig",
    "GeneratorConfig",
    "GradeCut",
    "InfluenceWeights",
    "InputsConfig",
    "KerberosConfig",
    "KpiConfig",
    "LdapConfig",
    "LifecycleConfig",
    "LoyaltyBand",
    "LoyaltyConfig",
    "LoyaltyDimension",
    "LoyaltyIndicator",
    "OutputConfig",
    "PerformanceConfig",
    "PrivacyConfig",
    "PurchaseLogConfig",
    "QuadrantConfig",
    "RfmConfig",
    "RiskCustomersConfig",
    "RiskReason",
    "ScoreBin",
    "Scorecard",
    "SegmentRule",
    "TableInput",
    "ThriftConfig",
    "TierRule",
    "TiersConfig",
    "ValidationConfig",
    "ValueConfig",
    "bind",
    "check",
    "is_loopback",
    "load_config",
    "load_config_dict",
    "parse_date",
    "parse_month",
    "parse_yaml",
    "source_columns",
    "to_dict",
]
