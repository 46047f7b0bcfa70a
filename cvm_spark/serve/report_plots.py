"""The run report's figures: matplotlib (Agg) charts of :class:`ReportData`, as PNG data
URIs.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

from cvm_spark.serve.report_data import GONE_ACCOUNT, NEW_ACCOUNT, ReportData


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


def _rfm_grids(data: ReportData
               ) -> tuple[list[int], list[list[float | None]], list[list[float | None]]]:
    """The score levels (lowest .. highest seen: 1..5, or 0..3 for the telecom codes) and
    the count and mean-monetary grids, row 0 = the highest R score."""
    seen = [s for r, f, _, _ in data.rfm for s in (r, f)]
    low, high = (min(seen), max(seen)) if seen else (1, 0)
    levels = list(range(low, high + 1))
    n = len(levels)
    counts: list[list[float | None]] = [[0.0] * n for _ in range(n)]
    means: list[list[float | None]] = [[None] * n for _ in range(n)]
    for r, f, count, mean in data.rfm:
        # row 0 = the highest R score (most recent at the top)
        counts[high - r][f - low] = float(count)
        means[high - r][f - low] = None if mean is None else float(mean)
    return levels, counts, means


def plot_rfm(data: ReportData) -> str:
    """Two heat maps over R score (rows) x F score (columns): accounts and mean monetary."""
    levels, counts, means = _rfm_grids(data)
    fig = _figure(9.0, 4.0)
    for k, (grid, title, fmt) in enumerate(((counts, "accounts", ",.0f"),
                                            (means, "mean monetary (RFM window)", ",.0f"))):
        ax = fig.add_subplot(1, 2, k + 1)
        values = [[math.nan if v is None else v for v in row] for row in grid]
        image = ax.imshow(values, cmap="Blues" if k == 0 else "Oranges", aspect="auto")
        fig.colorbar(image, ax=ax, shrink=0.8)
        _annotate_grid(ax, grid, fmt)
        ax.set_xticks(range(len(levels)), [str(f) for f in levels])
        ax.set_yticks(range(len(levels)), [str(r) for r in reversed(levels)])
        ax.set_xlabel("F score")
        ax.set_ylabel("R score")
        ax.set_title(title)
    return _png(fig)


def centroid_features(data: ReportData) -> list[str]:
    return sorted({m for c in data.centroids.values() for m in c if m.startswith("centroid:")})


def cluster_names(data: ReportData) -> list[str]:
    """Cluster names, highest mean label first (the order the model names them in)."""
    def key(name: str) -> float:
        value = data.centroids[name].get("mean_label", math.nan)
        return -value if value is not None and math.isfinite(value) else math.inf
    return sorted(data.centroids, key=key)


def plot_centroids(data: ReportData) -> str:
    """Grouped bars: each future-value cluster's centroid per cluster feature (log scale)."""
    features = centroid_features(data)
    clusters = cluster_names(data)
    fig = _figure()
    ax = fig.add_subplot()
    width = 0.8 / max(len(clusters), 1)
    top = 0.0
    for k, name in enumerate(clusters):
        values = [data.centroids[name].get(f, math.nan) for f in features]
        xs = [i + (k - (len(clusters) - 1) / 2) * width for i in range(len(features))]
        bars = ax.bar(xs, values, width,
                      label=f"{name} (n={data.centroids[name].get('size', 0):,.0f})")
        ax.bar_label(bars, labels=[fmt_num(v, ",.1f") for v in values], fontsize=8)
        top = max([top, *[abs(v) for v in values if v is not None and math.isfinite(v)]])
    ax.set_xticks(range(len(features)), [f.removeprefix("centroid:") for f in features])
    # symlog: centroids span orders of magnitude and may be 0 or negative (trends)
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(top=max(top, 1.0) * 10)
    ax.set_ylabel("cluster mean (log scale)")
    ax.set_title("Future-value clusters: centroids (original units)")
    fig.legend(fontsize=8, loc="outside lower center", ncols=max(len(clusters), 1))
    return _png(fig)


def backtest_scopes(data: ReportData) -> list[str]:
    """overall, then the clusters in centroid order, then anything else."""
    order = ["overall", *cluster_names(data)]
    return [s for s in order if s in data.backtest] + \
        sorted(s for s in data.backtest if s not in order)


def plot_backtest(data: ReportData) -> str:
    """Bars per scope (overall, clusters): model vs naive baseline, hold-out RMSE and MAE."""
    scopes = backtest_scopes(data)
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
                      [f"{s}\n(n={fmt_num(data.backtest[s].get('holdout_rows'), ',.0f')})"
                       for s in scopes])
        ax.set_title(f"hold-out {metric.upper()} (lower is better)")
        ax.legend(fontsize=8)
    return _png(fig)


def plot_predicted_vs_realised(data: ReportData) -> str:
    """Per back-test origin and cluster: mean predicted vs mean realised income per account,
    one marker per method (log-log; on the diagonal = unbiased in that group)."""
    fig = _figure(6.0, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    points: dict[str, list[tuple[float, float]]] = {}
    for scope, m in data.oot.items():
        parts = scope.split("/")
        if len(parts) == 3 and parts[0] != "mean" and parts[2].startswith("cluster:"):
            real, pred = m.get("realised_mean"), m.get("predicted_mean")
            if real and pred and real > 0 and pred > 0:
                points.setdefault(parts[1], []).append((real, pred))
    lo, hi = math.inf, 0.0
    for method, xy in sorted(points.items()):
        ax.scatter([x for x, _ in xy], [y for _, y in xy], s=24, label=method, alpha=0.8)
        lo = min(lo, *[min(x, y) for x, y in xy])
        hi = max(hi, *[max(x, y) for x, y in xy])
    if hi > 0:
        ax.plot([lo, hi], [lo, hi], color="#888888", linewidth=1, label="predicted = realised")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("realised income per account (next H months)")
    ax.set_ylabel("predicted income per account")
    ax.set_title("Out-of-time back-test: each origin x cluster")
    ax.legend(fontsize=8)
    return _png(fig)


def migration_grid(data: ReportData) -> tuple[list[str], list[str], dict[tuple[str, str], int]]:
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
    rows, cols, cells = migration_grid(data)
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


def fmt_num(value: float | int | None, fmt: str = ",.4g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(value, fmt)
