"""The optional ``surveys`` table: satisfaction (CSAT 1..5) and likelihood to recommend
(0..10) of a few percent of the open account-months, lower for declining, dormant and
closing accounts (docs/generator.md).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cvm_generate.draws import int_between, normal_draw, per_key, pick_by_share, uniform
from cvm_generate.plan import Plan, bad_key, conform
from cvm_generate.profile import (
    ANCHORS,
    SURVEY_BAD_KINDS,
    SURVEY_CSAT,
    SURVEY_RATE,
)


def surveys_table(am: DataFrame, plan: Plan) -> DataFrame:
    """One row per response; bad rows replace good ones in place.

    Hash slices: h_sv (4 x 16 bits) response?, day, channel, which questions are answered;
    h_sv2 the CSAT normal and the recommend noise.
    """
    rng, idc, m = plan.rng, F.col("id"), F.col("m")
    kinds = {k: i for i, k in enumerate(SURVEY_BAD_KINDS)}
    anchor_row = (idc < ANCHORS) & (m == plan.last)
    hashed = am.select("*", rng.hash("survey", idc, m).alias("h_sv"),
                       rng.hash("survey.2", idc, m).alias("h_sv2"))
    rows = hashed.where((uniform(F.col("h_sv"), 0, 4) < SURVEY_RATE) | anchor_row)
    rows = rows.select("*", *plan.kind_hash("bad.survey", idc, m))
    rows = rows.select("*", plan.row_kind(len(SURVEY_BAD_KINDS), m == plan.last)
                       .alias("kind"))
    kind, h, h2 = F.col("kind"), F.col("h_sv"), F.col("h_sv2")
    mean = per_key(F.col("pattern"), SURVEY_CSAT)
    csat = F.least(F.greatest(F.round(mean + normal_draw(h2, 0, 1, 4) * 0.8), F.lit(1.0)),
                   F.lit(5.0)).cast("int")
    recommend = F.least(F.greatest(F.round(csat * 2.2 - 1.0 + normal_draw(h2, 2, 3, 4) * 1.2),
                                   F.lit(0.0)), F.lit(10.0)).cast("int")
    which = uniform(h, 3, 4)   # 10 % answer only the CSAT question, 10 % only recommend
    day = int_between(uniform(h, 1, 4), F.col("day_lo"), F.col("day_hi"))
    date = F.date_add(F.col("month"), day - 1)
    cols = {
        "account_id": bad_key(plan, kinds, F.col("account_id")),
        "survey_date": F.when(kind == kinds["after_snapshot"],
                              F.date_add(F.last_day(F.lit(plan.snapshot)), day))
        .otherwise(date),
        "csat": F.when(kind == kinds["csat_out_of_range"], F.lit(6))
        .when(kind == kinds["no_answer"], F.lit(None))
        .when(which >= 0.9, F.lit(None)).otherwise(csat),
        "recommend": F.when(kind == kinds["recommend_out_of_range"], F.lit(11))
        .when(kind == kinds["no_answer"], F.lit(None))
        .when((which >= 0.8) & (which < 0.9), F.lit(None)).otherwise(recommend),
        "channel": pick_by_share(uniform(h, 2, 4), plan.industry.survey_channels,
                                 plan.industry.survey_channel_shares),
    }
    return conform(rows, "surveys", cols)
