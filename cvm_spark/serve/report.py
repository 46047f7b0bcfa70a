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

import html
import logging
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from pyspark.sql import SparkSession

from cvm_spark.config import CvmConfig
from cvm_spark.schemas.outputs import LIFECYCLE_LABELS_ZH
from cvm_spark.serve.report_data import (
    BACKTEST_METRICS,
    OOT_METRICS,
    ReportData,
    collect_report_data,
)
from cvm_spark.serve.report_plots import (
    backtest_scopes,
    centroid_features,
    cluster_names,
    fmt_num,
    migration_grid,
    plot_backtest,
    plot_centroids,
    plot_lifecycle,
    plot_migration,
    plot_predicted_vs_realised,
    plot_rfm,
    plot_tiers,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Aggregates (Spark)
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg canvas)
# --------------------------------------------------------------------------------------------


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


def _tier_table(data: ReportData) -> str:
    """Accounts and contribution money per tier, with each tier's share of both."""
    total = sum(n for _, n in data.tiers) or 1
    money = sum(data.tier_money.values())

    def cells(tier: str, n: int) -> list[str]:
        m = data.tier_money.get(tier)
        if m is None:
            return ["", "", ""]
        share = f"{100 * m / money:.1f}%" if money else ""
        return [f"{m:,.0f}", share, f"{m / n:,.0f}" if n else ""]

    return _table(["tier", "accounts", "share", "contribution money", "share of money",
                   "money per account"],
                  [[_e(t), f"{n:,}", f"{100 * n / total:.1f}%", *cells(t, n)]
                   for t, n in data.tiers], "tier-distribution")


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
                          [[_e(i["item_name"]), fmt_num(i["rows_in"], ","),
                            fmt_num(i["rows_quarantined"], ","), fmt_num(i["rows_out"], ",")]
                           for i in inputs], "run-inputs"))
    if outputs:
        out.append(_table(["output table", "stage", "rows written"],
                          [[_e(i["item_name"]), _e(i["stage"] or ""), fmt_num(i["rows_out"], ",")]
                           for i in outputs], "run-outputs", left=2))
    if stages:
        out.append(_table(["stage", "seconds"],
                          [[_e(i["item_name"]), fmt_num(i["stage_seconds"], ",.1f")]
                           for i in stages], "run-stages"))
    return "\n".join(out)


def _migration_html(data: ReportData) -> str:
    if data.previous is None:
        return ('<p class="note">No earlier snapshot with tiers in the warehouse: no '
                'migration to show.</p>')
    rows, cols, cells = migration_grid(data)
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


def _abc_html(data: ReportData) -> list[str]:
    """The ABC classes: accounts and contribution money, each with its share of the total."""
    accounts = sum(n for _, n, _ in data.abc) or 1
    money = sum(m for _, _, m in data.abc if m is not None and m > 0) or None

    def share(m: float | None) -> str:
        return "" if m is None or money is None else f"{100 * m / money:.1f}%"

    return ["<h2 id=\"abc\">ABC classes</h2>",
            "<p>Pareto classes on contribution money (tiers.abc.measure): class A is the "
            "accounts that carry the first 80 % of it. Shares of money are of the positive "
            "total.</p>",
            _table(["class", "accounts", "share of accounts", "contribution money",
                    "share of money"],
                   [[_e(c), f"{n:,}", f"{100 * n / accounts:.1f}%", fmt_num(m, ",.0f"),
                     share(m)] for c, n, m in data.abc], "abc")]


def _arpu_risk_html(data: ReportData) -> list[str]:
    """ARPU contribution classes and risk customers by reason (shown when configured)."""
    out: list[str] = []
    if data.arpu:
        total = sum(n for _, n in data.arpu) or 1
        out += ["<h2 id=\"arpu\">ARPU classes</h2>",
                "<p>Contribution classes on monthly ARPU (tiers.arpu_classes).</p>",
                _table(["ARPU class", "accounts", "share"],
                       [[_e(c), f"{n:,}", f"{100 * n / total:.1f}%"] for c, n in data.arpu],
                       "arpu")]
    if data.risk:
        out += ["<h2 id=\"risk\">Risk customers</h2>",
                "<p>Accounts per risk reason (tiers.risk_customers; an account may have "
                "several) and the risk customers among them: the high-value accounts the "
                "retention campaign targets.</p>",
                _table(["reason", "accounts", "risk customers"],
                       [[_e(r), f"{n:,}", f"{c:,}"] for r, n, c in data.risk], "risk")]
    return out


KPI_SHOWN = ("accounts", "cac", "clv", "clv_cac_ratio", "payback_months")
SURVEY_SHOWN = ("responses", "csat", "nps")
_DIMENSION_ORDER = {"acquisition_channel": 0, "tier": 1, "segment": 2, "lifecycle_stage": 3,
                    "all": 4}
# how the report names a dimension (aggregates only: no account attribute is shown by name)
_DIMENSION_LABEL = {"acquisition_channel": "channel", "segment": "RFM segment",
                    "lifecycle_stage": "lifecycle stage"}


def _kpi_rows(data: ReportData, kpis: Sequence[str]) -> list[list[str]]:
    """One row per (dimension, group) that has any of ``kpis``; a figure from fewer than
    ``kpi.min_group_size`` accounts or responses is marked ``*``."""
    groups = sorted({(d, g) for d, g, k in data.kpis if k in kpis},
                    key=lambda dg: (_DIMENSION_ORDER.get(dg[0], 9), dg[1]))

    def cell(dim: str, group: str, kpi: str) -> str:
        value, _, small = data.kpis.get((dim, group, kpi), (None, 0, False))
        text = fmt_num(value, ",.0f" if kpi in ("accounts", "responses", "cac", "clv")
                       else ",.2f")
        return f"{text}*" if small and kpi not in ("accounts", "responses") else text

    return [[_e(_DIMENSION_LABEL.get(d, d)), _e(g), *[cell(d, g, k) for k in kpis]]
            for d, g in groups]


def _kpi_html(data: ReportData) -> list[str]:
    """Acquisition cost and lifetime value per channel, per tier and overall, and
    satisfaction (CSAT, NPS) per tier, RFM segment, lifecycle stage and overall
    (``kpi_summary``)."""
    head = ["<h2 id=\"kpis\">Acquisition cost, lifetime value and satisfaction</h2>"]
    if not data.kpis:
        return [*head, '<p class="note">No kpi_summary rows for this snapshot.</p>']
    out = [*head,
           "<p>CAC: mean acquisition cost of the accounts with a known cost; CLV: their mean "
           "lifetime value; payback: CAC over the mean monthly contribution (n/a: not "
           "positive). * marks a figure from fewer than kpi.min_group_size accounts or "
           "responses.</p>",
           _table(["dimension", "group", "accounts", "CAC", "CLV", "CLV / CAC",
                   "payback months"], _kpi_rows(data, KPI_SHOWN), "kpis", left=2)]
    surveys = _kpi_rows(data, SURVEY_SHOWN)
    if not surveys:
        return [*out, '<p class="note">No survey responses (the optional surveys input): no '
                      'CSAT or NPS.</p>']
    return [*out,
            "<p>Survey responses of the last kpi.survey_months months: CSAT = mean "
            "satisfaction (1..5); NPS = % of 9-10 minus % of 0-6 on likelihood to recommend "
            "(-100..100).</p>",
            _table(["dimension", "group", "responses", "CSAT", "NPS"], surveys, "satisfaction",
                   left=2)]


def render_html(data: ReportData) -> str:
    """The report page for ``data`` (a self-contained HTML document)."""
    month = f"{data.snapshot:%Y-%m}"
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>cvm_spark report {month}</title><style>{_CSS}</style></head><body>",
             f"<h1>Customer value model: snapshot {month}</h1>",
             '<p class="note">Aggregates of the Delta tables only: no account ids or account '
             'attributes. See docs/report.md for what each part shows.</p>',
             "<h2 id=\"run\">Run</h2>", _run_html(data)]
    parts += ["<h2 id=\"tiers\">Tier distribution</h2>",
              _img(plot_tiers(data), "accounts per tier"), _tier_table(data)]
    parts += _abc_html(data)
    parts += _arpu_risk_html(data)
    parts += _kpi_html(data)
    parts += ["<h2 id=\"lifecycle\">Lifecycle funnel</h2>",
              _img(plot_lifecycle(data), "accounts per lifecycle stage"),
              _table(["lifecycle stage", "阶段", "accounts"],
                     [[_e(s), _e(LIFECYCLE_LABELS_ZH.get(s, "")), f"{n:,}"]
                      for s, n in data.lifecycle], "lifecycle", left=2)]
    parts.append("<h2 id=\"rfm\">RFM heat map</h2>")
    if data.rfm:
        top = max(r for r, _, _, _ in data.rfm)
        parts += [f"<p>Accounts and mean monetary value per R score (rows, {top} = most "
                  "recent) and F score (columns).</p>", _img(plot_rfm(data), "RFM heat maps")]
    else:
        parts.append('<p class="note">No rfm rows for this snapshot.</p>')
    parts.append("<h2 id=\"clusters\">Future-value clusters</h2>")
    if data.centroids:
        features = centroid_features(data)
        parts += [_img(plot_centroids(data), "cluster centroids"),
                  _table(["cluster", "accounts", "mean label",
                          *[f.removeprefix("centroid:") for f in features]],
                         [[_e(c), fmt_num(v.get("size"), ",.0f"),
                           fmt_num(v.get("mean_label"), ",.1f"),
                           *[fmt_num(v.get(f), ",.1f") for f in features]]
                          for c, v in ((c, data.centroids[c]) for c in cluster_names(data))],
                         "centroids")]
    else:
        parts.append('<p class="note">No future-value clusters in model_metrics.</p>')
    parts += _out_of_time_html(data)
    parts.append("<h2 id=\"backtest\">Future-value in-time hold-out</h2>")
    if data.backtest:
        scopes = backtest_scopes(data)
        parts += ["<p>In-time hold-out: accounts of the training snapshot (features as of "
                  "t-H, actual income of the following H months): the model's errors next to "
                  "the naive "
                  "forecast (last H months repeated).</p>",
                  _img(plot_backtest(data), "back-test model vs baseline"),
                  _table(["scope", "hold-out accounts", "RMSE", "baseline RMSE", "MAE",
                          "baseline MAE", "R²", "baseline R²"],
                         [[_e(s), *[fmt_num(data.backtest[s].get(m), ",.0f" if m == "holdout_rows"
                                         else ",.4g") for m in BACKTEST_METRICS]]
                          for s in scopes], "backtest")]
    else:
        parts.append('<p class="note">No future-value metrics in model_metrics.</p>')
    parts += ["<h2 id=\"migration\">Tier migration</h2>", _migration_html(data),
              "</body></html>"]
    return "\n".join(parts)


def _out_of_time_html(data: ReportData) -> list[str]:
    """The out-of-time back-test: per origin and method the overall errors, the means over
    the origins, the chosen method, and the predicted-vs-realised plot."""
    parts = ["<h2 id=\"oot\">Future-value back-test (out of time)</h2>"]
    overall = sorted(s for s in data.oot if s.endswith("/overall"))
    if not overall:
        return [*parts, '<p class="note">No out-of-time back-test in model_metrics.</p>']
    chosen = [s.removeprefix("chosen:") for s in data.oot if s.startswith("chosen:")]
    why = {s: m for s, m in data.oot.items() if s.startswith("chosen:")}
    reason = ("configured" if any("configured" in m for m in why.values())
              else "auto: best mean MSE skill")
    rows = [[*[_e(p) for p in s.split("/")[:2]],
             *[fmt_num(data.oot[s].get(m), ",.0f" if m == "accounts" else ",.4g")
               for m in OOT_METRICS]] for s in overall]
    return [*parts,
            "<p>Fitted as of each origin T (training features as of T-H), every account "
            "open at T predicted for T+1..T+H and compared with its realised income. MSE "
            "skill = 1 - MSE / MSE of the naive forecast (last H months repeated); bias = "
            "Σ predicted / Σ realised. Method in use: "
            f"<b>{_e(', '.join(chosen) or '?')}</b> ({_e(reason)}).</p>",
            _table(["origin", "method", "accounts", "RMSE", "MAE", "MSE skill", "bias"],
                   rows, "oot"),
            _img(plot_predicted_vs_realised(data), "back-test predicted vs realised")]


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
