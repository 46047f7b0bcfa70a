"""The HTML run report of a snapshot, built from the Delta tables only (docs/report.md).

The report can run any time after the job (``cvm report``) or right after it (``cvm run
--report``). Every number in it comes from an aggregate computed in Spark (group-bys of a
few dozen rows at most) and collected; no per-account row reaches the driver, and the page
holds no account id and no account attribute, only counts, means and model metrics.

Sections: run (from ``run_log``), tier distribution, lifecycle funnel, RFM heat maps,
future-value cluster centroids, future-value back-test against the naive baseline (hold-out
metrics from ``model_metrics``) and the tier migration matrix against the previous snapshot
in the warehouse. The page is one self-contained HTML file: plots are PNGs drawn with
matplotlib (Agg canvas, no pyplot state) and embedded as base64.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cvm_spark.config import CvmConfig, OutputConfig
from cvm_spark.schemas.inputs import SNAPSHOT_MONTH
from cvm_spark.storage.delta import read_table, table_path
from cvm_spark.storage.privacy import account_column

log = logging.getLogger(__name__)

# Migration matrix labels for accounts present in only one of the two snapshots.
NEW_ACCOUNT = "(not scored before)"
GONE_ACCOUNT = "(not scored now)"
# Funnel order of the lifecycle stages (tiers.lifecycle_stage); unknown stages go last.
LIFECYCLE_ORDER = ("potential", "new", "growing", "stable", "fluctuating", "churn_risk",
                   "dormant")
FV_MODEL = "future_value"
BACKTEST_METRICS = ("holdout_rows", "rmse", "baseline_rmse", "mae", "baseline_mae", "r2",
                    "baseline_r2")


class ReportError(RuntimeError):
    """The warehouse has nothing to report for the snapshot."""


@dataclass
class ReportData:
    """The small aggregates a report is drawn from (all collected from Spark aggregates)."""

    snapshot: date
    previous: date | None = None
    run: dict[str, Any] | None = None            # run-level fields of the latest run
    run_items: list[dict[str, Any]] = field(default_factory=list)  # its run_log rows
    runs_logged: int = 0
    tiers: list[tuple[str, int]] = field(default_factory=list)
    lifecycle: list[tuple[str, int]] = field(default_factory=list)
    rfm: list[tuple[int, int, int, float | None]] = field(default_factory=list)
    centroids: dict[str, dict[str, float]] = field(default_factory=dict)
    backtest: dict[str, dict[str, float]] = field(default_factory=dict)
    migration: list[tuple[str, str, int]] = field(default_factory=list)
    tier_order: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Aggregates (Spark)
# --------------------------------------------------------------------------------------------


def _exists(spark: SparkSession, output: OutputConfig, table: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, table_path(output, table))


def _snapshot_rows(spark: SparkSession, output: OutputConfig, table: str,
                   snapshot: date) -> DataFrame | None:
    if not _exists(spark, output, table):
        return None
    return read_table(spark, output, table).where(F.col(SNAPSHOT_MONTH) == F.lit(snapshot))


def previous_snapshot(spark: SparkSession, output: OutputConfig, snapshot: date) -> date | None:
    """The latest snapshot before ``snapshot`` that has tiers, or None."""
    if not _exists(spark, output, "tiers"):
        return None
    return (read_table(spark, output, "tiers")
            .where(F.col(SNAPSHOT_MONTH) < F.lit(snapshot))
            .agg(F.max(SNAPSHOT_MONTH)).first()[0])


def tier_migration(previous: DataFrame, current: DataFrame) -> DataFrame:
    """Accounts per (previous tier, current tier) between two snapshots of ``tiers``.

    A full outer join on ``account_id`` (``account_key`` in a pseudonymised warehouse):
    accounts scored in only one snapshot are counted under :data:`NEW_ACCOUNT` (previous
    side) or :data:`GONE_ACCOUNT` (current side).

    Returns:
        ``prev_tier``, ``tier``, ``accounts`` (one row per pair that occurs).
    """
    account = account_column(current)
    prev = previous.select(account, F.col("tier").alias("prev_tier"))
    cur = current.select(account, "tier")
    joined = prev.join(cur, on=account, how="full")
    return (joined.select(F.coalesce("prev_tier", F.lit(NEW_ACCOUNT)).alias("prev_tier"),
                          F.coalesce("tier", F.lit(GONE_ACCOUNT)).alias("tier"))
            .groupBy("prev_tier", "tier").agg(F.count(F.lit(1)).alias("accounts")))


def _run_section(spark: SparkSession, output: OutputConfig, data: ReportData) -> None:
    runs = _snapshot_rows(spark, output, "run_log", data.snapshot)
    if runs is None:
        return
    seqs = runs.agg(F.max("run_seq").alias("last"),
                    F.countDistinct("run_seq").alias("n")).first()
    if seqs["last"] is None:
        return
    data.runs_logged = int(seqs["n"])
    # one run's rows: a few dozen (one per table and stage)
    # (the start time as epoch microseconds: collected timestamps would be in local time)
    items = [r.asDict() for r in runs.where(F.col("run_seq") == seqs["last"])
             .select(*[c for c in runs.columns if c not in (SNAPSHOT_MONTH, "run_started_at")],
                     F.unix_micros("run_started_at").alias("run_started_at")).collect()]
    head = ("run_id", "run_seq", "run_started_at", "config_fingerprint", "code_version",
            "git_commit")
    data.run = {k: items[0][k] for k in head}
    micros = data.run["run_started_at"]
    data.run["run_started_at"] = (None if micros is None else
                                  datetime.fromtimestamp(micros / 1e6, UTC).isoformat())
    data.run_items = [{k: v for k, v in i.items() if k not in head} for i in items]


def _metrics(spark: SparkSession, output: OutputConfig, data: ReportData) -> None:
    metrics = _snapshot_rows(spark, output, "model_metrics", data.snapshot)
    if metrics is None:
        return
    rows = (metrics.where(F.col("model") == FV_MODEL)
            .where(F.col("metric").startswith("centroid:")
                   | F.col("metric").isin("size", "mean_label", *BACKTEST_METRICS))
            .select("scope", "metric", "value").collect())   # ~10 per cluster
    for r in rows:
        scope, metric, value = r["scope"], r["metric"], r["value"]
        if scope.startswith("cluster:") and (metric.startswith("centroid:")
                                             or metric in ("size", "mean_label")):
            data.centroids.setdefault(scope.removeprefix("cluster:"), {})[metric] = value
        if metric in BACKTEST_METRICS:
            data.backtest.setdefault(scope.removeprefix("cluster:"), {})[metric] = value


def collect_report_data(spark: SparkSession, cfg: CvmConfig,
                        snapshot: date | None = None) -> ReportData:
    """Aggregate everything the report shows for ``snapshot`` (default ``cfg.snapshot``).

    Raises:
        ReportError: the warehouse has no tiers for the snapshot (the job has not run).
    """
    snapshot = snapshot or cfg.snapshot
    output = cfg.output
    tiers = _snapshot_rows(spark, output, "tiers", snapshot)
    # tiers x lifecycle stages: a few dozen rows, both distributions from one aggregate
    cells = [] if tiers is None else [
        (r["tier"], r["lifecycle_stage"], int(r["n"])) for r in
        tiers.groupBy("tier", "lifecycle_stage").agg(F.count(F.lit(1)).alias("n")).collect()]
    if not cells:
        raise ReportError(f"no tiers for snapshot {snapshot.isoformat()} in "
                          f"{table_path(output, 'tiers')}; run `cvm run` for it first")
    assert tiers is not None
    data = ReportData(snapshot=snapshot)
    counts: dict[str, int] = {}
    stages: dict[str, int] = {}
    for tier, stage, n in cells:
        counts[tier] = counts.get(tier, 0) + n
        stages[stage] = stages.get(stage, 0) + n
    configured = [t.name for t in cfg.tiers.tiers]
    data.tier_order = configured + sorted(set(counts) - set(configured), key=str)
    data.tiers = [(t, counts[t]) for t in data.tier_order if t in counts]
    order = list(LIFECYCLE_ORDER) + sorted(set(stages) - set(LIFECYCLE_ORDER), key=str)
    data.lifecycle = [(s, stages.get(s, 0)) for s in order]   # known stages even when 0
    rfm = _snapshot_rows(spark, output, "rfm", snapshot)
    if rfm is not None:
        data.rfm = sorted(
            (int(r["r_score"]), int(r["f_score"]), int(r["n"]), r["mean_monetary"])
            for r in rfm.groupBy("r_score", "f_score").agg(
                F.count(F.lit(1)).alias("n"), F.avg("monetary").alias("mean_monetary"))
            .collect())
    _metrics(spark, output, data)
    _run_section(spark, output, data)
    data.previous = previous_snapshot(spark, output, snapshot)
    if data.previous is not None:
        prev = read_table(spark, output, "tiers").where(
            F.col(SNAPSHOT_MONTH) == F.lit(data.previous))
        data.migration = sorted(
            (r["prev_tier"], r["tier"], int(r["accounts"]))
            for r in tier_migration(prev, tiers).collect())   # at most (tiers + 1)^2 rows
    return data


# --------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg canvas)
# --------------------------------------------------------------------------------------------


def _figure(width: float = 7.0, height: float = 3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> str:
    """The figure as a base64 PNG (no software/date metadata: same data, same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _annotate_grid(ax, grid: list[list[float | None]], fmt: str) -> None:
    finite = [v for row in grid for v in row if v is not None and math.isfinite(v)]
    top = max(finite) if finite else 0.0
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if v is None:
                continue
            colour = "white" if top and v > 0.6 * top else "black"
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=8, color=colour)


def _bar(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str) -> str:
    fig = _figure()
    ax = fig.add_subplot()
    bars = ax.bar(range(len(values)), values, color="#4472c4")
    total = sum(values) or 1
    for b, v in zip(bars, values, strict=True):
        ax.annotate(f"{v:,.0f}\n{100 * v / total:.1f}%", (b.get_x() + b.get_width() / 2, v),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.margins(y=0.2)
    return _png(fig)


def plot_tiers(data: ReportData) -> str:
    """Bar chart: accounts per tier (best tier first)."""
    return _bar([t for t, _ in data.tiers], [n for _, n in data.tiers],
                f"Accounts per tier, {data.snapshot:%Y-%m}", "accounts")


def plot_lifecycle(data: ReportData) -> str:
    """Funnel: accounts per lifecycle stage, centred horizontal bars in lifecycle order."""
    fig = _figure(7.0, 3.8)
    ax = fig.add_subplot()
    labels = [s for s, _ in data.lifecycle]
    values = [n for _, n in data.lifecycle]
    widest = max(values) if values else 0
    total = sum(values) or 1
    ys = range(len(values))
    ax.barh(ys, values, left=[(widest - v) / 2 for v in values], color="#70ad47")
    for y, v in zip(ys, values, strict=True):
        ax.text(widest / 2, y, f"{v:,} ({100 * v / total:.1f}%)", ha="center", va="center",
                fontsize=8)
    ax.set_yticks(list(ys), labels)
    ax.invert_yaxis()
    ax.set_xticks([])
    ax.set_title(f"Lifecycle funnel, {data.snapshot:%Y-%m}")
    return _png(fig)


def _rfm_grids(data: ReportData) -> tuple[int, list[list[float | None]], list[list[float | None]]]:
    bins = max([max(r, f) for r, f, _, _ in data.rfm], default=0)
    counts: list[list[float | None]] = [[0.0] * bins for _ in range(bins)]
    means: list[list[float | None]] = [[None] * bins for _ in range(bins)]
    for r, f, n, mean in data.rfm:
        # row 0 = the highest R score (most recent at the top)
        counts[bins - r][f - 1] = float(n)
        means[bins - r][f - 1] = None if mean is None else float(mean)
    return bins, counts, means


def plot_rfm(data: ReportData) -> str:
    """Two heat maps over R score (rows) x F score (columns): accounts and mean monetary."""
    bins, counts, means = _rfm_grids(data)
    fig = _figure(9.0, 4.0)
    for k, (grid, title, fmt) in enumerate(((counts, "accounts", ",.0f"),
                                            (means, "mean monetary (RFM window)", ",.0f"))):
        ax = fig.add_subplot(1, 2, k + 1)
        values = [[math.nan if v is None else v for v in row] for row in grid]
        image = ax.imshow(values, cmap="Blues" if k == 0 else "Oranges", aspect="auto")
        fig.colorbar(image, ax=ax, shrink=0.8)
        _annotate_grid(ax, grid, fmt)
        ax.set_xticks(range(bins), [str(f) for f in range(1, bins + 1)])
        ax.set_yticks(range(bins), [str(r) for r in range(bins, 0, -1)])
        ax.set_xlabel("F score")
        ax.set_ylabel("R score")
        ax.set_title(title)
    return _png(fig)


def _centroid_features(data: ReportData) -> list[str]:
    return sorted({m for c in data.centroids.values() for m in c if m.startswith("centroid:")})


def _clusters(data: ReportData) -> list[str]:
    """Cluster names, highest mean label first (the order the model names them in)."""
    def key(name: str) -> float:
        value = data.centroids[name].get("mean_label", math.nan)
        return -value if value is not None and math.isfinite(value) else math.inf
    return sorted(data.centroids, key=key)


def plot_centroids(data: ReportData) -> str:
    """Grouped bars: each future-value cluster's centroid per cluster feature (log scale)."""
    features = _centroid_features(data)
    clusters = _clusters(data)
    fig = _figure()
    ax = fig.add_subplot()
    width = 0.8 / max(len(clusters), 1)
    top = 0.0
    for k, name in enumerate(clusters):
        values = [data.centroids[name].get(f, math.nan) for f in features]
        xs = [i + (k - (len(clusters) - 1) / 2) * width for i in range(len(features))]
        bars = ax.bar(xs, values, width,
                      label=f"{name} (n={data.centroids[name].get('size', 0):,.0f})")
        ax.bar_label(bars, labels=[_num(v, ",.1f") for v in values], fontsize=8)
        top = max([top, *[abs(v) for v in values if v is not None and math.isfinite(v)]])
    ax.set_xticks(range(len(features)), [f.removeprefix("centroid:") for f in features])
    # symlog: centroids span orders of magnitude and may be 0 or negative (trends)
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(top=max(top, 1.0) * 10)
    ax.set_ylabel("cluster mean (log scale)")
    ax.set_title("Future-value clusters: centroids (original units)")
    fig.legend(fontsize=8, loc="outside lower center", ncols=max(len(clusters), 1))
    return _png(fig)


def _backtest_scopes(data: ReportData) -> list[str]:
    """overall, then the clusters in centroid order, then anything else."""
    order = ["overall", *_clusters(data)]
    return [s for s in order if s in data.backtest] + \
        sorted(s for s in data.backtest if s not in order)


def plot_backtest(data: ReportData) -> str:
    """Bars per scope (overall, clusters): model vs naive baseline, hold-out RMSE and MAE."""
    scopes = _backtest_scopes(data)
    fig = _figure(9.0, 3.8)
    for k, metric in enumerate(("rmse", "mae")):
        ax = fig.add_subplot(1, 2, k + 1)
        for j, (who, key, colour) in enumerate((("model", metric, "#4472c4"),
                                                ("naive baseline", f"baseline_{metric}",
                                                 "#a5a5a5"))):
            values = [data.backtest[s].get(key, math.nan) for s in scopes]
            ax.bar([i + (j - 0.5) * 0.4 for i in range(len(scopes))], values, 0.4,
                   label=who, color=colour)
        ax.set_xticks(range(len(scopes)),
                      [f"{s}\n(n={_num(data.backtest[s].get('holdout_rows'), ',.0f')})"
                       for s in scopes])
        ax.set_title(f"hold-out {metric.upper()} (lower is better)")
        ax.legend(fontsize=8)
    return _png(fig)


def _migration_grid(data: ReportData) -> tuple[list[str], list[str], dict[tuple[str, str], int]]:
    cells = {(p, t): n for p, t, n in data.migration}
    seen_prev = {p for p, _, _ in data.migration}
    seen_cur = {t for _, t, _ in data.migration}
    order = data.tier_order + sorted((seen_prev | seen_cur) - set(data.tier_order)
                                     - {NEW_ACCOUNT, GONE_ACCOUNT}, key=str)
    rows = [t for t in order if t in seen_prev] + \
        ([NEW_ACCOUNT] if NEW_ACCOUNT in seen_prev else [])
    cols = [t for t in order if t in seen_cur] + \
        ([GONE_ACCOUNT] if GONE_ACCOUNT in seen_cur else [])
    return rows, cols, cells


def plot_migration(data: ReportData) -> str:
    """Heat map: accounts per (previous tier, current tier), coloured by share of the row.

    Colouring by count would let the largest tier hide every other cell; the share of the
    previous tier's accounts shows where each tier went.
    """
    rows, cols, cells = _migration_grid(data)
    grid: list[list[float | None]] = [[float(cells.get((r, c), 0)) for c in cols] for r in rows]
    shares = [[(v or 0.0) / (sum(v or 0.0 for v in row) or 1.0) for v in row] for row in grid]
    fig = _figure(7.0, 0.6 * len(rows) + 2.0)
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Purples", aspect="auto", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the row")
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:,.0f}", ha="center", va="center", fontsize=8,
                    color="white" if shares[i][j] > 0.6 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=20, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(f"tier {data.snapshot:%Y-%m}")
    ax.set_ylabel(f"tier {data.previous:%Y-%m}" if data.previous else "previous tier")
    ax.set_title("Tier migration (accounts)")
    return _png(fig)


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1000px;color:#222}h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;
border-bottom:1px solid #ccc}table{border-collapse:collapse;margin:0.5em 0;font-size:0.9em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}img{max-width:100%}p.note{color:#555;font-size:0.9em}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | int | None, fmt: str = ",.4g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(value, fmt)


def _img(png: str, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{png}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], table_id: str = "",
           left: int = 1) -> str:
    """An HTML table; cells are already-escaped strings; the first ``left`` columns left."""
    ident = f' id="{_e(table_id)}"' if table_id else ""
    head = "".join(f'<th class="{"l" if i < left else ""}">{_e(h)}</th>'
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _run_html(data: ReportData) -> str:
    if data.run is None:
        return '<p class="note">No run_log rows for this snapshot (written by cvm run).</p>'
    run = data.run
    facts = [("run id", run["run_id"]), ("run number", run["run_seq"]),
             ("runs logged for the snapshot", data.runs_logged),
             ("started (UTC)", run["run_started_at"] or "not recorded"),
             ("config fingerprint", run["config_fingerprint"]),
             ("code version", run["code_version"]),
             ("git commit", run["git_commit"] or "unknown")]
    out = [_table(["run", ""], [[_e(k), _e(v)] for k, v in facts], "run-facts", left=2)]
    items = data.run_items
    inputs = [i for i in items if i["item_kind"] == "input"]
    outputs = [i for i in items if i["item_kind"] == "output"]
    stages = [i for i in items if i["item_kind"] == "stage"]
    if inputs:
        out.append(_table(["input table", "read", "quarantined", "accepted"],
                          [[_e(i["item_name"]), _num(i["rows_in"], ","),
                            _num(i["rows_quarantined"], ","), _num(i["rows_out"], ",")]
                           for i in inputs], "run-inputs"))
    if outputs:
        out.append(_table(["output table", "stage", "rows written"],
                          [[_e(i["item_name"]), _e(i["stage"] or ""), _num(i["rows_out"], ",")]
                           for i in outputs], "run-outputs", left=2))
    if stages:
        out.append(_table(["stage", "seconds"],
                          [[_e(i["item_name"]), _num(i["stage_seconds"], ",.1f")]
                           for i in stages], "run-stages"))
    return "\n".join(out)


def _migration_html(data: ReportData) -> str:
    if data.previous is None:
        return ('<p class="note">No earlier snapshot with tiers in the warehouse: no '
                'migration to show.</p>')
    rows, cols, cells = _migration_grid(data)
    rank = {t: i for i, t in enumerate(data.tier_order)}
    up = sum(n for (p, t), n in cells.items() if p in rank and t in rank and rank[t] < rank[p])
    down = sum(n for (p, t), n in cells.items() if p in rank and t in rank and rank[t] > rank[p])
    same = sum(n for (p, t), n in cells.items() if p == t and p in rank)
    body = []
    for r in rows:
        row = [_e(r)]
        for c in cols:
            n = cells.get((r, c), 0)
            row.append(f'<span data-from="{_e(r)}" data-to="{_e(c)}">{n:,}</span>')
        body.append([*row, f"{sum(cells.get((r, c), 0) for c in cols):,}"])
    body.append(["total", *[f"{sum(cells.get((r, c), 0) for r in rows):,}" for c in cols],
                 f"{sum(cells.values()):,}"])
    table = _table([f"{data.previous:%Y-%m} \\ {data.snapshot:%Y-%m}", *cols, "total"], body,
                   "tier-migration")
    return "\n".join([
        f"<p>From {data.previous:%Y-%m} (rows) to {data.snapshot:%Y-%m} (columns): "
        f"{same:,} accounts kept their tier, {up:,} moved up, {down:,} moved down "
        f"(tiers ranked as configured, best first).</p>",
        table, _img(plot_migration(data), "tier migration heat map")])


def render_html(data: ReportData) -> str:
    """The report page for ``data`` (a self-contained HTML document)."""
    month = f"{data.snapshot:%Y-%m}"
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>cvm_spark report {month}</title><style>{_CSS}</style></head><body>",
             f"<h1>Customer value model: snapshot {month}</h1>",
             '<p class="note">Aggregates of the Delta tables only: no account ids or account '
             'attributes. See docs/report.md for what each part shows.</p>',
             "<h2 id=\"run\">Run</h2>", _run_html(data)]
    total = sum(n for _, n in data.tiers) or 1
    parts += ["<h2 id=\"tiers\">Tier distribution</h2>",
              _img(plot_tiers(data), "accounts per tier"),
              _table(["tier", "accounts", "share"],
                     [[_e(t), f"{n:,}", f"{100 * n / total:.1f}%"] for t, n in data.tiers],
                     "tier-distribution")]
    parts += ["<h2 id=\"lifecycle\">Lifecycle funnel</h2>",
              _img(plot_lifecycle(data), "accounts per lifecycle stage"),
              _table(["lifecycle stage", "accounts"],
                     [[_e(s), f"{n:,}"] for s, n in data.lifecycle], "lifecycle")]
    parts.append("<h2 id=\"rfm\">RFM heat map</h2>")
    if data.rfm:
        parts += ["<p>Accounts and mean monetary value per R score (rows, 5 = most recent) and "
                  "F score (columns).</p>", _img(plot_rfm(data), "RFM heat maps")]
    else:
        parts.append('<p class="note">No rfm rows for this snapshot.</p>')
    parts.append("<h2 id=\"clusters\">Future-value clusters</h2>")
    if data.centroids:
        features = _centroid_features(data)
        parts += [_img(plot_centroids(data), "cluster centroids"),
                  _table(["cluster", "accounts", "mean label",
                          *[f.removeprefix("centroid:") for f in features]],
                         [[_e(c), _num(v.get("size"), ",.0f"), _num(v.get("mean_label"), ",.1f"),
                           *[_num(v.get(f), ",.1f") for f in features]]
                          for c, v in ((c, data.centroids[c]) for c in _clusters(data))],
                         "centroids")]
    else:
        parts.append('<p class="note">No future-value clusters in model_metrics.</p>')
    parts.append("<h2 id=\"backtest\">Future-value back-test</h2>")
    if data.backtest:
        scopes = _backtest_scopes(data)
        parts += ["<p>Hold-out accounts of the training snapshot (features as of t-H, actual "
                  "income of the following H months): the model's errors next to the naive "
                  "forecast (last H months repeated).</p>",
                  _img(plot_backtest(data), "back-test model vs baseline"),
                  _table(["scope", "hold-out accounts", "RMSE", "baseline RMSE", "MAE",
                          "baseline MAE", "R²", "baseline R²"],
                         [[_e(s), *[_num(data.backtest[s].get(m), ",.0f" if m == "holdout_rows"
                                         else ",.4g") for m in BACKTEST_METRICS]]
                          for s in scopes], "backtest")]
    else:
        parts.append('<p class="note">No future-value metrics in model_metrics.</p>')
    parts += ["<h2 id=\"migration\">Tier migration</h2>", _migration_html(data),
              "</body></html>"]
    return "\n".join(parts)


def default_report_path(snapshot_month: str) -> str:
    """``cvm_report_<YYYY-MM>.html`` in the current directory."""
    return f"cvm_report_{snapshot_month}.html"


def write_report(spark: SparkSession, cfg: CvmConfig, out: str | Path | None = None,
                 snapshot: date | None = None) -> Path:
    """Aggregate, draw and write the report of ``snapshot`` (default ``cfg.snapshot``).

    Args:
        spark: the session.
        cfg: the configuration (output location, tier order).
        out: the HTML file to write (a local path; default :func:`default_report_path`).
        snapshot: first day of the month to report on.

    Returns:
        The path written.

    Raises:
        ReportError: the warehouse has no tiers for the snapshot.
    """
    data = collect_report_data(spark, cfg, snapshot)
    path = Path(out or default_report_path(f"{data.snapshot:%Y-%m}"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(data), encoding="utf-8")
    log.info("report for %s written to %s", data.snapshot.isoformat(), path)
    return path
