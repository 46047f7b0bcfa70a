"""Reading config YAML: a safe loader that refuses duplicate keys and keeps dates as
strings, ``--set`` overrides, and the refusal of a pseudonym key written into a config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cvm_spark.config.binding import bind
from cvm_spark.config.checks import ConfigError
from cvm_spark.config.root import CvmConfig
from cvm_spark.config.warehouse import PRIVACY_FIELDS, PRIVACY_KEY_ENV, SECRET_LIKE


def _refuse_literal_key(data: dict[str, Any]) -> None:
    """Refuse a pseudonym key written into the config (file or ``--set``), value unechoed."""
    privacy = data.get("privacy")
    if not isinstance(privacy, dict):
        return
    for name in privacy:
        if str(name) not in PRIVACY_FIELDS and SECRET_LIKE.search(str(name)):
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
    return bind(CvmConfig, data, "")


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
