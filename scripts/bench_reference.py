"""Reference implementations the benchmark compares cvm_spark with (docs/performance.md).

Each reference runs in a process of its own, started by scripts/bench.py, so that its
memory does not count as the driver's and a slow one can be stopped with a timeout:

    python scripts/bench_reference.py features --config C --inputs DIR --out DIR \
        --threads N --memory-limit 8GB [--compare-with SPARK_FEATURES_DIR] --json OUT
    python scripts/bench_reference.py future-value --config C --matrix DIR --threads N --json OUT
    python scripts/bench_reference.py lifetimes --config C --summary DIR --json OUT

* ``features``: DuckDB SQL computing the window features of
  :func:`cvm_spark.features.windows.compute_features` (same columns, same definitions,
  docs/features.md) from the Parquet copy of the accepted input rows, written to Parquet;
  then :func:`compare_features` against our output on a seeded sample of accounts.
* ``future-value``: scikit-learn StandardScaler + KMeans + one LinearRegression per cluster
  on the future-value training matrix (the steps of
  :func:`cvm_spark.models.future_value.fit_future_value`).
* ``lifetimes``: lifetimes' BetaGeoFitter and GammaGammaFitter fitted on the BTYD summary
  and scored over every row.

Each prints nothing of interest and writes one JSON document (times in seconds, measured
inside the process around the work only: interpreter start and imports are excluded).
Reference libraries (duckdb, scikit-learn, lifetimes, pandas, pyarrow) are imported here
only; they are never runtime dependencies of cvm_spark.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cvm_spark.common.months import add_months, month_end  # noqa: E402
from cvm_spark.config import FeaturesConfig, load_config  # noqa: E402

INPUTS = ("accounts", "transactions", "monthly_product")


# --------------------------------------------------------------------------------------------
# Window features in DuckDB SQL
# --------------------------------------------------------------------------------------------


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def parquet_source(path: str) -> str:
    """``read_parquet`` of a file or of every Parquet file under a directory (Spark output)."""
    p = Path(path)
    pattern = str(p / "**" / "*.parquet") if p.is_dir() else str(p)
    return f"read_parquet({_lit(pattern)})"


def feature_sql(paths: dict[str, str], snapshot: date, cfg: FeaturesConfig,
                product_lines: list[str]) -> str:
    """DuckDB SQL for the features of :func:`cvm_spark.features.windows.compute_features`.

    Same output columns in the same order, from the accepted rows of ``accounts``,
    ``transactions`` and ``monthly_product`` (``paths``: table -> Parquet file or folder).
    The definitions are those of docs/features.md, written independently in SQL (it is a
    reference, not a translation of the Spark plan): Spark's ``months_between`` is spelled
    out, the active-month count is a bit-or of ``1 << k`` as in Spark, and the BTYD summary
    takes the first purchase day's amount with ``arg_min``.
    """
    s, end = snapshot, month_end(snapshot)
    S, E = f"DATE '{s.isoformat()}'", f"DATE '{end.isoformat()}'"
    first_month = add_months(s, -(cfg.lookback_months - 1))
    windows = cfg.windows
    tm, vm, am = cfg.trend_months, cfg.volatility_months, cfg.active_months
    purchase = ", ".join(_lit(d) for d in cfg.purchase_directions)

    def k_of(col: str) -> str:
        """Calendar months from ``col`` back to the snapshot month."""
        return f"(({s.year} - year({col})) * 12 + ({s.month} - month({col})))"

    def months_between(d1: str, d2: str) -> str:
        """Spark's months_between for dates (whole months when the days match or both
        dates are month ends, else a fraction of 31 days)."""
        return (f"((year({d1}) - year({d2})) * 12 + (month({d1}) - month({d2})) + CASE WHEN "
                f"day({d1}) = day({d2}) OR ({d1} = last_day({d1}) AND {d2} = last_day({d2})) "
                f"THEN 0 ELSE (day({d1}) - day({d2})) / 31.0 END)")

    def hi(w: int) -> str:
        return f"least(k_open, {w - 1})"

    def n_open(w: int) -> str:
        return f"greatest({hi(w)} - lo + 1, 0)"

    def sum_k(lo: str, hi_: str) -> str:
        return f"(CASE WHEN {hi_} >= {lo} THEN ({lo} + {hi_}) * ({hi_} - {lo} + 1) / 2 ELSE 0 END)"

    def sum_k2(lo: str, hi_: str) -> str:
        def upto(n: str) -> str:
            return f"(({n}) * (({n}) + 1) * (2 * ({n}) + 1) / 6)"
        return f"(CASE WHEN {hi_} >= {lo} THEN {upto(hi_)} - {upto(lo + ' - 1')} ELSE 0 END)"

    txn_windows = ",\n      ".join(
        f"CAST(sum(CASE WHEN k < {w} THEN n ELSE 0 END) AS BIGINT) AS frequency_{w}m, "
        f"sum(CASE WHEN k < {w} THEN amt ELSE 0.0 END) AS monetary_{w}m" for w in windows)
    balances = ",\n      ".join(
        f"sum(CASE WHEN product_line = {_lit(pl)} THEN avg_balance END) AS {_ident('bal_' + pl)}"
        for pl in product_lines)
    mon_windows = []
    for w in windows:
        mon_windows += [f"sum(CASE WHEN k < {w} THEN income ELSE 0.0 END) AS income_{w}m",
                        f"sum(CASE WHEN k < {w} THEN cost ELSE 0.0 END) AS cost_{w}m"]
        mon_windows += [f"sum(CASE WHEN k < {w} THEN coalesce({_ident('bal_' + pl)}, 0.0) "
                        f"ELSE 0.0 END) AS {_ident(f'balsum_{pl}_{w}m')}"
                        for pl in product_lines]
    mon_aggs = ",\n      ".join(mon_windows)

    cols = [
        f"{S} AS snapshot_month", "b.account_id", "customer_type", "region",
        "acquisition_channel", "open_date", "close_date", "is_closed", "tenure_months",
        f"CAST({E} - last_txn_date AS INTEGER) AS recency_days", "last_txn_date",
        f"CAST(coalesce(active, 0) AS INTEGER) AS active_months_{am}m",
    ]
    for w in windows:
        n = n_open(w)
        cols += [
            f"CAST({n} AS INTEGER) AS months_open_{w}m",
            f"CAST(coalesce(t.frequency_{w}m, 0) AS BIGINT) AS frequency_{w}m",
            f"coalesce(t.monetary_{w}m, 0.0) AS monetary_{w}m",
            f"t.monetary_{w}m / NULLIF(t.frequency_{w}m, 0) AS avg_ticket_{w}m",
            f"coalesce(m.income_{w}m, 0.0) AS income_{w}m",
            f"coalesce(m.cost_{w}m, 0.0) AS cost_{w}m",
            f"coalesce(m.income_{w}m, 0.0) - coalesce(m.cost_{w}m, 0.0) AS profit_{w}m",
            f"CASE WHEN {n} > 0 THEN coalesce(m.income_{w}m, 0.0) / {n} END AS arpu_{w}m",
        ]
        cols += [f"CASE WHEN {n} > 0 THEN coalesce(m.{_ident(f'balsum_{pl}_{w}m')}, 0.0) / {n} "
                 f"END AS {_ident(f'avg_balance_{pl}_{w}m')}" for pl in product_lines]
    # trend: OLS slope of income on x = -k over the open months of the trend window
    n_t, hi_t = n_open(tm), hi(tm)
    sy, sxy = "coalesce(m.ty, 0.0)", "(-coalesce(m.tky, 0.0))"
    sx, sxx = f"(-{sum_k('lo', hi_t)})", sum_k2("lo", hi_t)
    trend = (f"CASE WHEN {n_t} >= 2 THEN ({n_t} * {sxy} - {sx} * {sy}) / "
             f"({n_t} * {sxx} - {sx} * {sx}) END")
    n_v = n_open(vm)
    mean = f"(coalesce(m.vy, 0.0) / {n_v})"
    vol = (f"CASE WHEN {n_v} >= 2 AND {mean} > 0 THEN "
           f"sqrt(greatest(coalesce(m.vyy, 0.0) / {n_v} - {mean} * {mean}, 0.0)) / {mean} END")
    cols += [
        "CAST(coalesce(m.product_count, 0) AS INTEGER) AS product_count",
        f"{trend} AS income_trend_{tm}m",
        f"{vol} AS income_volatility_{vm}m",
        "CAST(CASE WHEN days > 0 THEN days - 1 END AS DOUBLE) AS btyd_frequency",
        "CAST(last_purchase - first_purchase AS DOUBLE) AS btyd_recency",
        f"CAST({E} - first_purchase AS DOUBLE) AS btyd_t",
        "CASE WHEN days - 1 > 0 THEN (amt_all - amt_first_day) / (days - 1) "
        "WHEN days - 1 = 0 THEN 0.0 END AS btyd_monetary",
    ]
    select = ",\n  ".join(cols)
    closed = f"(close_date IS NOT NULL AND close_date <= {E})"
    return f"""
WITH acc AS (
  SELECT *, {closed} AS closed FROM {parquet_source(paths['accounts'])}
  WHERE open_date <= {E}
), base AS (
  SELECT account_id, customer_type, region, acquisition_channel, open_date,
    CASE WHEN closed THEN close_date END AS close_date,
    closed AS is_closed,
    CAST(greatest(floor({months_between(f"CASE WHEN closed THEN close_date ELSE {E} END",
                                         "open_date")}), 0) AS INTEGER) AS tenure_months,
    {k_of('open_date')} AS k_open,
    CASE WHEN closed THEN {k_of('close_date')} ELSE -1 END AS k_close
  FROM acc
), daily AS (
  SELECT account_id, d, count(*) AS n, sum(amount) AS amt,
    sum(CASE WHEN purchase THEN amount END) AS pamt
  FROM (SELECT account_id, CAST(txn_ts AS DATE) AS d, amount,
               direction IN ({purchase}) AS purchase
        FROM {parquet_source(paths['transactions'])})
  WHERE d <= {E}
  GROUP BY account_id, d
), txn AS (
  SELECT account_id,
      {txn_windows},
      max(d) AS last_txn_date,
      bit_count(coalesce(bit_or(CASE WHEN k < {am} THEN CAST(1 AS BIGINT) << k END),
                         CAST(0 AS BIGINT))) AS active,
      count(pamt) AS days,
      sum(pamt) AS amt_all,
      arg_min(pamt, d) FILTER (WHERE pamt IS NOT NULL) AS amt_first_day,
      min(d) FILTER (WHERE pamt IS NOT NULL) AS first_purchase,
      max(d) FILTER (WHERE pamt IS NOT NULL) AS last_purchase
  FROM (SELECT *, {k_of('d')} AS k FROM daily)
  GROUP BY account_id
), monthly AS (
  SELECT account_id, month, sum(income) AS income, sum(cost) AS cost,
      {balances},
      count(CASE WHEN avg_balance > 0 OR income > 0 THEN 1 END) AS held
  FROM {parquet_source(paths['monthly_product'])}
  WHERE month BETWEEN DATE '{first_month.isoformat()}' AND {S}
  GROUP BY account_id, month
), mrows AS (
  SELECT mo.*, {k_of('mo.month')} AS k
  FROM monthly mo JOIN base USING (account_id)
  WHERE {k_of('mo.month')} <= base.k_open AND {k_of('mo.month')} >= base.k_close
), mon AS (
  SELECT account_id,
      {mon_aggs},
      sum(CASE WHEN k < {tm} THEN income ELSE 0.0 END) AS ty,
      sum(CASE WHEN k < {tm} THEN k * income ELSE 0.0 END) AS tky,
      sum(CASE WHEN k < {vm} THEN income ELSE 0.0 END) AS vy,
      sum(CASE WHEN k < {vm} THEN income * income ELSE 0.0 END) AS vyy,
      sum(CASE WHEN k = 0 THEN held ELSE 0 END) AS product_count
  FROM mrows GROUP BY account_id
), b AS (
  SELECT *, greatest(k_close, 0) AS lo FROM base
)
SELECT
  {select}
FROM b LEFT JOIN txn t ON t.account_id = b.account_id
       LEFT JOIN mon m ON m.account_id = b.account_id
"""


def run_duckdb_features(paths: dict[str, str], out: str, snapshot: date, cfg: FeaturesConfig,
                        product_lines: list[str], threads: int,
                        memory_limit: str | None = None) -> dict[str, Any]:
    """Compute the features with DuckDB from ``paths`` and write them to ``out`` (Parquet).

    Returns:
        ``seconds`` (the SQL and the Parquet write, timed together), ``rows`` written,
        DuckDB's version and settings.
    """
    import duckdb

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET threads = {int(threads)}")
    con.execute("SET TimeZone = 'UTC'")   # txn_ts -> date in UTC, as spark.sql.session.timeZone
    if memory_limit:
        con.execute(f"SET memory_limit = {_lit(memory_limit)}")
    sql = feature_sql(paths, snapshot, cfg, product_lines)
    start = time.monotonic()
    con.execute(f"COPY ({sql}) TO {_lit(out)} (FORMAT parquet)")
    seconds = time.monotonic() - start
    rows = con.execute(f"SELECT count(*) FROM {parquet_source(out)}").fetchone()[0]
    settings = dict(con.execute(
        "SELECT name, value FROM duckdb_settings() WHERE name IN ('threads', 'memory_limit')"
    ).fetchall())
    con.close()
    return {"seconds": seconds, "rows": int(rows), "version": duckdb.__version__,
            "settings": settings}


# --------------------------------------------------------------------------------------------
# Comparison of two feature tables
# --------------------------------------------------------------------------------------------


@dataclass
class FeatureComparison:
    """Result of :func:`compare_features` (``ok`` is False on any disagreement)."""

    rows_ours: int = 0
    rows_reference: int = 0
    accounts_only_ours: int = 0
    accounts_only_reference: int = 0
    columns_missing_in_reference: list[str] = field(default_factory=list)
    columns_extra_in_reference: list[str] = field(default_factory=list)
    type_differences: dict[str, list[str]] = field(default_factory=dict)
    sampled_accounts: int = 0
    compared_values: int = 0
    mismatching_values: int = 0
    mismatching_columns: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    rel_tol: float = 0.0
    abs_tol: float = 0.0

    @property
    def ok(self) -> bool:
        return (self.rows_ours == self.rows_reference and not self.accounts_only_ours
                and not self.accounts_only_reference
                and not self.columns_missing_in_reference
                and not self.columns_extra_in_reference and self.mismatching_values == 0
                and self.sampled_accounts > 0)

    def summary(self) -> str:
        """One line for the report."""
        parts = [f"{self.sampled_accounts:,} sampled accounts x "
                 f"{self.compared_values // max(self.sampled_accounts, 1)} columns: "
                 f"{self.mismatching_values:,} mismatching values"]
        if self.mismatching_columns:
            parts.append("in " + ", ".join(f"{c} ({n})" for c, n in
                                           sorted(self.mismatching_columns.items())))
        if self.rows_ours != self.rows_reference:
            parts.append(f"rows {self.rows_ours:,} vs {self.rows_reference:,}")
        if self.accounts_only_ours or self.accounts_only_reference:
            parts.append(f"accounts only in ours {self.accounts_only_ours:,}, only in the "
                         f"reference {self.accounts_only_reference:,}")
        if self.columns_missing_in_reference:
            parts.append(f"columns missing in the reference {self.columns_missing_in_reference}")
        if self.columns_extra_in_reference:
            parts.append(f"extra columns in the reference {self.columns_extra_in_reference}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "summary": self.summary()}


def _same(a: Any, b: Any, rel_tol: float, abs_tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b) and type(a) is type(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        fa, fb = float(a), float(b)
        if math.isnan(fa) or math.isnan(fb):
            return math.isnan(fa) and math.isnan(fb)
        return math.isclose(fa, fb, rel_tol=rel_tol, abs_tol=abs_tol)
    return a == b


def compare_features(ours: str, reference: str, sample: int = 1000, seed: int = 42,
                     rel_tol: float = 1e-6, abs_tol: float = 1e-6,
                     key: str = "account_id", max_examples: int = 20) -> FeatureComparison:
    """Compare two feature tables (Parquet) column by column on a seeded sample of accounts.

    Row counts and the account sets are compared in full; values are compared on
    ``sample`` accounts chosen by a seeded hash of the key (the same accounts on every
    run). Numbers agree when ``math.isclose(ours, ref, rel_tol, abs_tol)``; everything else
    (strings, dates, booleans, nulls) must be equal. Integer vs floating types of the same
    value are reported in ``type_differences`` but are not mismatches.
    """
    import duckdb

    con = duckdb.connect()
    o, r = parquet_source(ours), parquet_source(reference)
    result = FeatureComparison(rel_tol=rel_tol, abs_tol=abs_tol)
    o_types = {row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM {o}").fetchall()}
    r_types = {row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM {r}").fetchall()}
    result.columns_missing_in_reference = [c for c in o_types if c not in r_types]
    result.columns_extra_in_reference = [c for c in r_types if c not in o_types]
    result.type_differences = {c: [o_types[c], r_types[c]] for c in o_types
                               if c in r_types and o_types[c] != r_types[c]}
    result.rows_ours = con.execute(f"SELECT count(*) FROM {o}").fetchone()[0]
    result.rows_reference = con.execute(f"SELECT count(*) FROM {r}").fetchone()[0]
    k = _ident(key)
    result.accounts_only_ours = con.execute(
        f"SELECT count(*) FROM (SELECT {k} FROM {o} EXCEPT SELECT {k} FROM {r})").fetchone()[0]
    result.accounts_only_reference = con.execute(
        f"SELECT count(*) FROM (SELECT {k} FROM {r} EXCEPT SELECT {k} FROM {o})").fetchone()[0]
    columns = [c for c in o_types if c in r_types and c != key]
    sel = ", ".join(_ident(c) for c in columns)
    con.execute(f"CREATE TEMP TABLE pick AS SELECT {k} FROM {o} "
                f"ORDER BY hash({k}, {int(seed)}), {k} LIMIT {int(sample)}")
    rows_o = {row[0]: row[1:] for row in con.execute(
        f"SELECT {k}, {sel} FROM {o} SEMI JOIN pick USING ({k})").fetchall()}
    rows_r = {row[0]: row[1:] for row in con.execute(
        f"SELECT {k}, {sel} FROM {r} SEMI JOIN pick USING ({k})").fetchall()}
    con.close()
    result.sampled_accounts = len(rows_o)
    for account in sorted(rows_o):
        theirs = rows_r.get(account)
        for i, col in enumerate(columns):
            mine = rows_o[account][i]
            other = None if theirs is None else theirs[i]
            result.compared_values += 1
            if theirs is not None and _same(mine, other, rel_tol, abs_tol):
                continue
            result.mismatching_values += 1
            result.mismatching_columns[col] = result.mismatching_columns.get(col, 0) + 1
            if len(result.examples) < max_examples:
                result.examples.append({key: account, "column": col, "ours": repr(mine),
                                        "reference": ("<no row>" if theirs is None
                                                      else repr(other))})
    return result


# --------------------------------------------------------------------------------------------
# scikit-learn future value
# --------------------------------------------------------------------------------------------


def run_sklearn_future_value(matrix: str, fv: Any, seed: int) -> dict[str, Any]:
    """StandardScaler + KMeans + per-cluster LinearRegression, as fit_future_value does.

    ``matrix``: Parquet with ``account_id``, the feature columns, ``label``, ``baseline`` and
    ``holdout`` (the same hash split as ours). ``fv``: a FutureValueConfig. KMeans gets
    ``n_init=1``, the run seed, ``kmeans_max_iter`` and Spark's default tolerance 1e-4; the
    regressions are weighted least squares (``weight_by_level``) on the change over the
    baseline (``target: change``), as ours with ``reg_param = 0``. Regularised or Huber fits
    are not mirrored (the result says so instead of timing something else).
    """
    if fv.reg_param != 0 or fv.loss != "squaredError":
        return {"skipped": f"not mirrored: future_value.reg_param={fv.reg_param}, "
                           f"loss={fv.loss} (the reference mirrors unregularised least "
                           f"squares only)"}
    import numpy as np
    import pandas as pd
    import sklearn
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import StandardScaler

    start = time.monotonic()
    df = pd.read_parquet(matrix)
    read_s = time.monotonic() - start
    xc = df[list(fv.cluster_features)].to_numpy(dtype=float)
    if fv.cluster_transform == "signed_log1p":
        xc = np.sign(xc) * np.log1p(np.abs(xc))
    xr = df[list(fv.features)].to_numpy(dtype=float)
    label = df["label"].to_numpy(dtype=float)
    baseline = df["baseline"].to_numpy(dtype=float)
    hold = df["holdout"].to_numpy(dtype=bool)
    train = ~hold
    target = label - baseline if fv.target == "change" else label
    weight = (1.0 / (1.0 + np.maximum(baseline, 0.0)) ** 2 if fv.weight_by_level
              else np.ones_like(label))
    scaler = StandardScaler().fit(xc[train])
    kmeans = KMeans(n_clusters=fv.k, n_init=1, random_state=seed, max_iter=fv.kmeans_max_iter,
                    tol=1e-4).fit(scaler.transform(xc[train]))
    cluster = kmeans.predict(scaler.transform(xc))
    models: dict[int, Any] = {}
    pooled = None
    for c in range(fv.k):
        rows = train & (cluster == c)
        if rows.sum() >= fv.min_cluster_rows:
            models[c] = LinearRegression().fit(xr[rows], target[rows], sample_weight=weight[rows])
        else:
            if pooled is None:
                pooled = LinearRegression().fit(xr[train], target[train],
                                                sample_weight=weight[train])
            models[c] = pooled
    fit_s = time.monotonic() - start - read_s
    pred = np.zeros(hold.sum())
    hc, hx = cluster[hold], xr[hold]
    for c, model in models.items():
        sel = hc == c
        if sel.any():
            pred[sel] = model.predict(hx[sel])
    if fv.target == "change":
        pred = pred + baseline[hold]
    if fv.floor_at_zero:
        pred = np.maximum(pred, 0.0)
    err = pred - label[hold]
    base_err = baseline[hold] - label[hold]
    seconds = time.monotonic() - start
    clusters = []
    for c in range(fv.k):
        members = train & (cluster == c)
        clusters.append({"train_rows": int(members.sum()),
                         "size": int((cluster == c).sum()),
                         "mean_label": float(label[members].mean()) if members.any() else None})
    clusters.sort(key=lambda d: -(d["mean_label"] if d["mean_label"] is not None else -math.inf))
    return {"seconds": seconds, "read_seconds": read_s, "fit_seconds": fit_s,
            "rows": len(df), "train_rows": int(train.sum()), "holdout_rows": int(hold.sum()),
            "rmse": float(np.sqrt(np.mean(err ** 2))) if err.size else None,
            "baseline_rmse": float(np.sqrt(np.mean(base_err ** 2))) if err.size else None,
            "clusters_by_rank": clusters, "kmeans_iterations": int(kmeans.n_iter_),
            "kmeans_inertia": float(kmeans.inertia_),
            "version": sklearn.__version__}


# --------------------------------------------------------------------------------------------
# lifetimes BG/NBD and Gamma-Gamma
# --------------------------------------------------------------------------------------------


def run_lifetimes(summary: str, clv: Any) -> dict[str, Any]:
    """Fit lifetimes' BetaGeoFitter and GammaGammaFitter and score every valid row.

    ``summary``: Parquet with the BTYD columns in days (the features' convention); recency
    and T are converted to periods of ``clv.period_days`` as ours does. Scoring =
    ``conditional_expected_number_of_purchases_up_to_time(horizon_periods)`` and
    ``conditional_probability_alive`` (BG/NBD) and ``conditional_expected_average_profit``
    (Gamma-Gamma) over every row with a valid summary.
    """
    import lifetimes
    import numpy as np
    import pandas as pd

    out: dict[str, Any] = {"version": lifetimes.__version__}
    start = time.monotonic()
    df = pd.read_parquet(summary, columns=["btyd_frequency", "btyd_recency", "btyd_t",
                                           "btyd_monetary"])
    x, tx, age, m = (df[c].to_numpy(dtype=float) for c in df.columns)
    with np.errstate(invalid="ignore"):
        fit_rows = ~(np.isnan(x) | np.isnan(tx) | np.isnan(age))
        valid = (fit_rows & ~np.isnan(m) & (x >= 0) & (tx >= 0) & (tx <= age)
                 & ((x > 0) | (tx == 0)))
    period = float(clv.period_days)
    f, r, t = x[fit_rows], tx[fit_rows] / period, age[fit_rows] / period
    out["read_seconds"] = time.monotonic() - start
    mark = time.monotonic()
    bgf = lifetimes.BetaGeoFitter(penalizer_coef=clv.penalizer).fit(f, r, t, tol=clv.tolerance)
    out["bgnbd_fit_seconds"] = time.monotonic() - mark
    mark = time.monotonic()
    fv, rv, tv = x[valid], tx[valid] / period, age[valid] / period
    expected = bgf.conditional_expected_number_of_purchases_up_to_time(
        clv.horizon_periods, fv, rv, tv)
    alive = bgf.conditional_probability_alive(fv, rv, tv)
    out["bgnbd_score_seconds"] = time.monotonic() - mark
    out["bgnbd_seconds"] = out["read_seconds"] + out["bgnbd_fit_seconds"] + \
        out["bgnbd_score_seconds"]
    out["bgnbd"] = {k: float(v) for k, v in bgf.params_.items()}
    out["fit_rows"] = int(fit_rows.sum())
    out["scored_rows"] = int(valid.sum())
    out["mean_expected_purchases"] = float(np.nanmean(expected))
    out["mean_prob_alive"] = float(np.nanmean(alive))
    out["nan_scores"] = int(np.isnan(expected).sum() + np.isnan(alive).sum())
    mark = time.monotonic()
    repeat = fit_rows & ~np.isnan(m) & (x > 0) & (m > 0)
    ggf = lifetimes.GammaGammaFitter(penalizer_coef=clv.penalizer).fit(
        x[repeat], m[repeat], tol=clv.tolerance)
    out["gamma_gamma_fit_seconds"] = time.monotonic() - mark
    mark = time.monotonic()
    avg_value = ggf.conditional_expected_average_profit(x[valid], m[valid])
    out["gamma_gamma_score_seconds"] = time.monotonic() - mark
    out["gamma_gamma"] = {k: float(v) for k, v in ggf.params_.items()}
    out["mean_expected_avg_value"] = float(np.nanmean(np.asarray(avg_value, dtype=float)))
    out["seconds"] = time.monotonic() - start
    return out


# --------------------------------------------------------------------------------------------
# Command line (one reference per process)
# --------------------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    feat = sub.add_parser("features", help="DuckDB window features (+ comparison)")
    feat.add_argument("--inputs", required=True, help="folder with accounts/, transactions/, "
                      "monthly_product/ (Parquet)")
    feat.add_argument("--out", required=True, help="Parquet file to write")
    feat.add_argument("--threads", type=int, required=True)
    feat.add_argument("--memory-limit", default=None)
    feat.add_argument("--compare-with", default=None, help="our features (Parquet)")
    feat.add_argument("--sample", type=int, default=1000)
    feat.add_argument("--seed", type=int, default=42)
    feat.add_argument("--tolerance", type=float, default=1e-6)
    fv = sub.add_parser("future-value", help="scikit-learn KMeans + LinearRegression")
    fv.add_argument("--matrix", required=True)
    lt = sub.add_parser("lifetimes", help="lifetimes BG/NBD + Gamma-Gamma")
    lt.add_argument("--summary", required=True)
    for p in (feat, fv, lt):
        p.add_argument("--config", required=True)
        p.add_argument("--json", required=True, help="where to write the result")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    if args.what == "features":
        paths = {t: str(Path(args.inputs) / t) for t in INPUTS}
        result = run_duckdb_features(paths, args.out, cfg.snapshot, cfg.features,
                                     list(cfg.validation.product_lines), args.threads,
                                     args.memory_limit)
        if args.compare_with:
            result["comparison"] = compare_features(
                args.compare_with, args.out, sample=args.sample, seed=args.seed,
                rel_tol=args.tolerance, abs_tol=args.tolerance).to_dict()
    elif args.what == "future-value":
        result = run_sklearn_future_value(args.matrix, cfg.future_value, cfg.run_seed)
    else:
        result = run_lifetimes(args.summary, cfg.clv)
    result["peak_rss_mb"] = _peak_rss_mb()
    Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
