"""A report a person reads: each stage of the run contributes its own lines (its ``report_lines``)."""

from __future__ import annotations

from typing import Optional, TypedDict

from physai.core.io import write_text_atomic
from physai.stages import report_order, stage_module


class ReportSummary(TypedDict):
    path: str
    learning_curve: Optional[str]


REQUIRES: list[str] = []
PRODUCES = ["report/report.md", "summary:report"]
OPTIONAL = ["summary:*"]  # every section an earlier stage wrote: the report comes after every stage it shows
SUMMARY = ReportSummary


def run(cfg, ctx) -> ReportSummary:
    summary = ctx.summary()
    ctx.path("report").mkdir(parents=True, exist_ok=True)
    lines = [f"# physai run: {cfg.env.id} / {cfg.algo.name} / seed {cfg.seed}", ""]
    for name in report_order():
        contribute = getattr(stage_module(name), "report_lines", None)
        if contribute is not None:
            lines += contribute(cfg, ctx, summary)
    write_text_atomic(ctx.path("report", "report.md"), "\n".join(lines))
    curve = ctx.path("report", "learning_curve.png")
    figures = ReportSummary(path="report/report.md",
                            learning_curve="report/learning_curve.png" if curve.exists() else None)
    ctx.record("report", figures)
    return figures
