"""What one run read, rejected and wrote: :class:`RunSummary`, filled in by the runner,
printed at the end of the job and turned into ``run_log`` rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

# The steps of the pipeline in order (cvm_spark.pipeline.runner.STEPS, checked there at
# import; here so that the command line lists them without importing Spark).
STEP_NAMES = ("validate", "quarantine", "features", "rfm", "model")
# model_metrics' model name of the future-value back-test (cvm_spark.models.future_value)
BACKTEST = "future_value_backtest"


@dataclass
class RunSummary:
    """What one run read, rejected and wrote (printed at the end of the job)."""

    run_id: str
    snapshot_month: str
    rows_read: dict[str, int] = field(default_factory=dict)
    rows_quarantined: dict[str, dict[str, int]] = field(default_factory=dict)
    rows_written: dict[str, int] = field(default_factory=dict)
    segments: dict[str, int] = field(default_factory=dict)
    tiers: dict[str, int] = field(default_factory=dict)
    metrics: list[tuple[str, str, str, float]] = field(default_factory=list)
    # kpi_summary's overall row per KPI (observed while the table was written)
    kpis: dict[str, float | None] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # "input:<table>" / "output:<table>" -> the stage that read or wrote it (for run_log)
    table_stages: dict[str, str] = field(default_factory=dict)
    # the dates of the accepted events and where their start comes from (data_window_text)
    data_window: str = ""

    def render(self) -> str:
        """A short human-readable summary."""
        lines = [f"cvm_spark run {self.run_id} for snapshot {self.snapshot_month}", "",
                 f"{'input table':<18}{'read':>12}{'quarantined':>14}"]
        for name, read in self.rows_read.items():
            bad = sum(self.rows_quarantined.get(name, {}).values())
            lines.append(f"{name:<18}{read:>12,}{bad:>14,}")
        reasons: dict[str, int] = {}
        for per_table in self.rows_quarantined.values():
            for reason, n in per_table.items():
                reasons[reason] = reasons.get(reason, 0) + n
        if reasons:
            lines.append("quarantine reasons: " + ", ".join(
                f"{r}={n:,}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])))
        if self.data_window:
            lines.append(f"data window: {self.data_window}")
        lines += ["", f"accounts scored: {self.rows_written.get('rfm', 0):,}", "",
                  f"{'segment':<22}{'accounts':>10}"]
        total = sum(self.segments.values()) or 1
        for name, n in sorted(self.segments.items(), key=lambda kv: -kv[1]):
            lines.append(f"{name:<22}{n:>10,}  {100 * n / total:5.1f}%")
        if self.tiers:
            lines += ["", f"{'tier':<22}{'accounts':>10}"]
            for name, n in sorted(self.tiers.items(), key=lambda kv: -kv[1]):
                lines.append(f"{name:<22}{n:>10,}  {100 * n / total:5.1f}%")
        if self.metrics:
            lines += ["", "model metrics (all in model_metrics):"]
            for model, scope, metric, value in sorted(self.metrics):
                if model == BACKTEST or metric in ("mse_skill", "in_use"):
                    continue
                shown = "null" if value is None else f"{value:,.4g}"
                lines.append(f"  {model:<13}{scope:<24}{metric:<16}{shown}")
            lines += backtest_lines(self.metrics)
        lines += self._kpi_lines()
        lines += ["", "tables written (Delta, partitioned by snapshot_month):"]
        for name, path in self.tables.items():
            lines.append(f"  {name:<12}{self.rows_written.get(name, 0):>10,} rows  {path}")
        lines += ["", "stage times: " + ", ".join(
            f"{k} {v:.1f}s" for k, v in self.stage_seconds.items())]
        return "\n".join(lines)

    def _kpi_lines(self) -> list[str]:
        """Company KPIs over all accounts (kpi_summary's ``all`` rows), when written."""
        if not any(v is not None for v in self.kpis.values()):
            return []

        def show(kpi: str, fmt: str) -> str:
            value = self.kpis.get(kpi)
            return "n/a" if value is None else format(value, fmt)

        lines = ["", "company KPIs (kpi_summary, all accounts):",
                 f"  CAC {show('cac', ',.0f')}, CLV {show('clv', ',.0f')}, CLV / CAC "
                 f"{show('clv_cac_ratio', ',.2f')}, payback {show('payback_months', ',.1f')} "
                 f"months"]
        if self.kpis.get("responses"):
            lines.append(f"  {show('responses', ',.0f')} survey responses: CSAT "
                         f"{show('csat', '.2f')}, NPS {show('nps', '+.1f')}")
        return lines


def data_window_text(first_accepted: dict[str, date | None], data_start: date | None,
                     snapshot_end: date) -> str:
    """``<first> .. <snapshot end>`` of the accepted events (open dates of accounts are not
    events), and whether the start was set
    (``validation.data_start``) or derived from the data (the earliest accepted event)."""
    firsts = [d for name, d in first_accepted.items() if d is not None and name != "accounts"]
    first = min(firsts).isoformat() if firsts else "no accepted events"
    why = (f"validation.data_start {data_start.isoformat()}" if data_start is not None
           else "derived from the data: validation.data_start unset")
    return f"{first} .. {snapshot_end.isoformat()} ({why})"


def backtest_lines(metrics: list[tuple[str, str, str, float]]) -> list[str]:
    """The future-value back-test as a small table: MSE skill vs the naive forecast (%) per
    method and origin, the mean over the origins, and the method in use and why."""
    skill = {(scope.split("/")[0], scope.split("/")[1]): value
             for model, scope, metric, value in metrics
             if model == BACKTEST and metric == "mse_skill" and scope.endswith("/overall")}
    methods = sorted({m for _, m in skill if m != "naive"})
    if not methods:
        return []
    origins = sorted({o for o, _ in skill if o != "mean"})
    cols = [*origins, "mean"]

    def pct(value: float | None) -> str:
        return f"{'n/a' if value is None or value != value else f'{100 * value:.1f}':>9}"

    lines = ["", "future value, out-of-time back-test (MSE skill vs the naive forecast, %):",
             f"  {'method':<22}" + "".join(f"{c:>9}" for c in cols)]
    lines += [f"  {m:<22}" + "".join(pct(skill.get((c, m))) for c in cols) for m in methods]
    in_use = [s.split(":", 1)[1] for model, s, metric, _ in metrics
              if metric == "in_use" and s.startswith("method:")]
    chosen = [(s.split(":", 1)[1], metric) for model, s, metric, _ in metrics
              if model == BACKTEST and s.startswith("chosen:")]
    why = ("auto: best mean skill" if any(k == "mean_mse_skill" for _, k in chosen)
           else "configured" if chosen else "")
    if in_use:
        lines.append(f"  in use: {in_use[0]}" + (f" ({why})" if why else ""))
    return lines

