"""Pseudonymous account keys for the BI-facing tables (docs/reliability.md, section "privacy").

With ``privacy.pseudonymise`` on, every table the pipeline writes carries ``account_key``
= HMAC-SHA256(key, account_id) as lower-case hex in place of ``account_id``, and the
quarantine's ``row_json`` keeps only contract columns, with identifiers replaced by their
keys and personal attributes left out. :func:`pseudonymise` is the one function that does
this; the pipeline calls it on every frame it writes.

The key comes from the environment variable ``privacy.key_env`` or the file
``privacy.key_file`` (:func:`load_key`), never from the config. The HMAC is computed with
Spark built-ins (``sha2``, ``unhex``, ``concat`` on binary; no Python UDF):

    HMAC(K, m) = SHA256((K0 xor opad) || SHA256((K0 xor ipad) || m))

The two padded keys are secrets (each gives the key back), so they are not written into
the query as literals, which Spark prints in ``explain`` output, the UI and event logs:
they come from a one-row DataFrame that is cross-joined (broadcast) onto the rows, and
plans show only its column names. As a second guard :func:`redact_plans` sets
``spark.sql.redaction.string.regex`` to a pattern that masks long hex runs in plan strings.

A warehouse is written in one mode with one key: every table records the key's id (a hash
of the key, not the key) as a table property, and :func:`check_warehouse` refuses to write
into tables written in the other mode or with another key, before anything is written.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cvm_spark.config import ConfigError, OutputConfig, PrivacyConfig
from cvm_spark.schemas.inputs import ACCOUNT_ID, INPUT_TABLES
from cvm_spark.storage.delta import table_path

log = logging.getLogger(__name__)

ACCOUNT_KEY = "account_key"
MIN_KEY_BYTES = 16
BLOCK_BYTES = 64          # SHA-256 block size: the HMAC pads the key to this length
KEY_ID_PROPERTY = "cvm.privacy.keyId"
# input columns that identify an account (hashed in quarantine.row_json)
IDENTIFIER_COLUMNS = frozenset({"account_id", "related_account_id", "counterparty_id"})
# input columns about the person, never copied into an output (schemas.ACCOUNTS_ALTERNATIVES)
PERSONAL_COLUMNS = frozenset({"birth_year", "age_band"})
# what quarantine.row_json keeps when pseudonymised: contract columns only (a source's extra
# columns may hold anything: names, e-mail addresses), identifiers hashed
ROW_JSON_COLUMNS = frozenset(
    c.lower() for t in INPUT_TABLES.values() for c in t.columns) - PERSONAL_COLUMNS
# Masks hex runs of 64+ characters in plan strings (the padded keys are 128 hex characters);
# config fingerprints (16) and git commits (40) stay readable.
PLAN_REDACTION_REGEX = "(?i)(0x)?[0-9a-f]{64,}"
REDACTION_CONF = "spark.sql.redaction.string.regex"
_IPAD, _OPAD = "_cvm_hmac_ipad", "_cvm_hmac_opad"
_KEY_ID_LABEL = b"cvm_spark pseudonym key id v1"


class PseudonymKeyError(ConfigError):
    """The pseudonym key is missing, unreadable or too short (the message never holds it)."""


class WarehouseModeError(RuntimeError):
    """The warehouse was written with pseudonymisation in another mode or with another key."""


class PseudonymKey:
    """The secret of the keyed hash; its repr and str never show the bytes."""

    __slots__ = ("_secret", "source")

    def __init__(self, secret: bytes, source: str) -> None:
        if len(secret) < MIN_KEY_BYTES:
            raise PseudonymKeyError(
                f"the pseudonym key from {source} has {len(secret)} bytes; at least "
                f"{MIN_KEY_BYTES} are needed (e.g. `openssl rand -hex 32`)")
        self._secret = bytes(secret)
        self.source = source

    def __repr__(self) -> str:
        return f"PseudonymKey(<{len(self._secret)} bytes from {self.source}>)"

    __str__ = __repr__

    @property
    def key_id(self) -> str:
        """A public id of the key (16 hex digits of an HMAC under it); reveals nothing of it."""
        return hmac.new(self._secret, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]

    def pads(self) -> tuple[bytes, bytes]:
        """``(K0 xor ipad, K0 xor opad)`` of RFC 2104 for SHA-256 (64 bytes each)."""
        k0 = self._secret
        if len(k0) > BLOCK_BYTES:
            k0 = hashlib.sha256(k0).digest()
        k0 = k0.ljust(BLOCK_BYTES, b"\0")
        return bytes(b ^ 0x36 for b in k0), bytes(b ^ 0x5C for b in k0)

    def hexdigest(self, message: str) -> str:
        """The key of one id computed in Python (tests and support look-ups)."""
        return hmac.new(self._secret, message.encode("utf-8"), hashlib.sha256).hexdigest()


def load_key(cfg: PrivacyConfig, environ: Mapping[str, str] | None = None) -> PseudonymKey:
    """Read the pseudonym key: the file ``cfg.key_file`` if set, else ``$<cfg.key_env>``.

    A key file is read as bytes; one trailing newline (``\\n`` or ``\\r\\n``) is dropped so
    ``echo ... > file`` works. An environment value is taken as UTF-8 text.

    Raises:
        PseudonymKeyError: no key, an unreadable file or a key shorter than 16 bytes; the
            message names the variable or the file, never the key.
    """
    if cfg.key_file is not None:
        path = Path(cfg.key_file)
        try:
            secret = path.read_bytes()
        except OSError as exc:
            raise PseudonymKeyError(
                f"privacy.key_file: cannot read the pseudonym key file {path} "
                f"({exc.strerror or type(exc).__name__})") from None
        for end in (b"\r\n", b"\n"):
            if secret.endswith(end):
                secret = secret[:-len(end)]
                break
        return PseudonymKey(secret, f"file {path} (privacy.key_file)")
    env = os.environ if environ is None else environ
    value = env.get(cfg.key_env, "")
    if not value:
        raise PseudonymKeyError(
            f"privacy.pseudonymise is on but the environment variable {cfg.key_env} "
            "(privacy.key_env) is not set or empty; set it to the pseudonym key, or name a "
            "key file in privacy.key_file")
    return PseudonymKey(value.encode("utf-8"), f"environment variable {cfg.key_env}")


def run_key(cfg: PrivacyConfig, key: PseudonymKey | None = None) -> PseudonymKey | None:
    """The key a run uses: None when pseudonymisation is off, else ``key`` or :func:`load_key`."""
    if not cfg.pseudonymise:
        return None
    return key if key is not None else load_key(cfg)


def hmac_sha256_hex(message: Column, inner_pad: Column, outer_pad: Column) -> Column:
    """HMAC-SHA256 of a string column (UTF-8 bytes) as lower-case hex, from built-ins.

    Args:
        message: the text to hash; null gives null.
        inner_pad: binary ``K0 xor ipad`` (64 bytes).
        outer_pad: binary ``K0 xor opad`` (64 bytes).
    """
    inner = F.unhex(F.sha2(F.concat(inner_pad, message.cast("binary")), 256))
    return F.sha2(F.concat(outer_pad, inner), 256)


def _pad_frame(spark: SparkSession, key: PseudonymKey) -> DataFrame:
    inner, outer = key.pads()
    return spark.createDataFrame([(bytearray(inner), bytearray(outer))],
                                 f"{_IPAD} binary, {_OPAD} binary")


def _keyed(column: Column) -> Column:
    return hmac_sha256_hex(column, F.col(_IPAD), F.col(_OPAD))


def _pseudonymised_row_json(row_json: Column) -> Column:
    """``row_json`` with contract columns only: identifiers keyed, personal attributes out."""
    fields = F.from_json(row_json, "map<string,string>")
    kept = F.map_filter(fields, lambda k, _v: F.lower(k).isin(*sorted(ROW_JSON_COLUMNS)))
    keyed = F.transform_values(kept, lambda k, v: F.when(
        F.lower(k).isin(*sorted(IDENTIFIER_COLUMNS)), _keyed(v)).otherwise(v))
    return F.to_json(keyed)


def pseudonymise(df: DataFrame, key: PseudonymKey) -> DataFrame:
    """Replace ``account_id`` by ``account_key`` (same position) and clean ``row_json``.

    Other columns are unchanged. The padded keys reach the rows through a broadcast
    one-row frame, so they are never literals of the plan (see the module docstring).

    Raises:
        ValueError: an identifier column other than ``account_id`` is in the frame (no
            output table has one; a new one must be handled here first).
    """
    stray = sorted((IDENTIFIER_COLUMNS - {ACCOUNT_ID}) & set(df.columns))
    if stray:
        raise ValueError(f"columns {stray} identify accounts; pseudonymise handles only "
                         f"{ACCOUNT_ID} and row_json")
    touched = {ACCOUNT_ID, "row_json"} & set(df.columns)
    if not touched:
        return df
    joined = df.crossJoin(F.broadcast(_pad_frame(df.sparkSession, key)))
    columns = []
    for name in df.columns:
        if name == ACCOUNT_ID:
            columns.append(_keyed(F.col(name)).alias(ACCOUNT_KEY))
        elif name == "row_json":
            columns.append(_pseudonymised_row_json(F.col(name)).alias(name))
        else:
            columns.append(F.col(name))
    return joined.select(*columns)


def account_column(df: DataFrame) -> str:
    """The account column of an output table: ``account_key`` when pseudonymised."""
    return ACCOUNT_KEY if ACCOUNT_KEY in df.columns else ACCOUNT_ID


def table_properties(key: PseudonymKey | None) -> dict[str, str]:
    """Table properties that mark a table written with ``key`` (none without a key)."""
    return {} if key is None else {KEY_ID_PROPERTY: key.key_id}


def redact_plans(spark: SparkSession) -> None:
    """Mask long hex runs in plan strings (``spark.sql.redaction.string.regex``).

    A pattern the session already has is kept and combined with ours.
    """
    current = spark.conf.get(REDACTION_CONF, None)
    if current and PLAN_REDACTION_REGEX in current:
        return
    spark.conf.set(REDACTION_CONF, PLAN_REDACTION_REGEX if not current
                   else f"(?:{current})|(?:{PLAN_REDACTION_REGEX})")


def _table_properties(spark: SparkSession, path: str) -> dict[str, str]:
    """A Delta table's properties, from its metadata (``SHOW TBLPROPERTIES``). Unlike
    ``DeltaTable.detail()`` this computes no file statistics: no Spark job."""
    quoted = path.replace("`", "``")
    return {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES delta.`{quoted}`").collect()}


def check_warehouse(spark: SparkSession, output: OutputConfig, tables: tuple[str, ...],
                    key: PseudonymKey | None) -> None:
    """Refuse to write into tables of another pseudonymisation mode or key.

    Called before the first write of a run. Tables that do not exist yet pass.

    Raises:
        WarehouseModeError: naming the table, what it was written with and what to do.
    """
    from delta.tables import DeltaTable

    want = None if key is None else key.key_id
    for table in tables:
        path = table_path(output, table)
        if not DeltaTable.isDeltaTable(spark, path):
            continue
        found = _table_properties(spark, path).get(KEY_ID_PROPERTY)
        if found == want:
            continue
        where = f"table {output.database}.{table} at {path}"
        if want is None:
            raise WarehouseModeError(
                f"{where} holds pseudonymous account keys (key id {found}); with "
                "privacy.pseudonymise off the run would add raw account ids to it. Turn "
                "privacy.pseudonymise on with the same key, or write to another "
                "output.warehouse / output.database")
        if found is None:
            raise WarehouseModeError(
                f"{where} was written without pseudonymisation (it holds raw account ids); a "
                "table cannot switch to account_key. Write the pseudonymised tables to "
                "another output.warehouse or output.database")
        raise WarehouseModeError(
            f"{where} was written with another pseudonym key (key id {found}, this key "
            f"{want}); every account_key would change. Use that key, or write to another "
            "output.warehouse / output.database and re-run the snapshots with the new key")
