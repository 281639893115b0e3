"""The report as CSV (one row per event) and as JSON (interview, events, score, audit)."""
from __future__ import annotations

import csv
import io
import json
from typing import Any

from bot.common import jsonable
from bot.report.data import ReportData

CSV_COLUMNS = ("id", "type", "start", "end", "duration", "confidence", "review", "detail")
GAP_TYPE = "not_analysed"  # the CSV's rows for coverage gaps


def build_csv(data: ReportData) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for e in data.events:
        w.writerow([e.id, e.type, f"{e.start:.3f}", "" if e.end is None else f"{e.end:.3f}", f"{e.duration:.3f}",
                    f"{e.confidence:.3f}", e.review or "", json.dumps(jsonable(e.detail), ensure_ascii=False)])
    assert data.coverage is not None
    for i, g in enumerate(data.coverage.gaps, 1):  # what was not analysed, as rows of their own type
        w.writerow([f"gap-{i}", GAP_TYPE, f"{g.start:.3f}", f"{g.end:.3f}", f"{g.seconds:.3f}", "", "",
                    json.dumps({"reason": g.reason})])
    return out.getvalue()


def build_json(data: ReportData) -> dict[str, Any]:
    assert data.score is not None
    interview = dict(data.interview)
    if not isinstance(interview.get("report_delivery"), dict | None):
        del interview["report_delivery"]  # a line stored by an older version: it named the outbox's file
    return {
        "interview": jsonable(interview),
        "events": [jsonable(e.to_dict()) for e in data.events],
        "score": data.score.to_dict(),
        "coverage": data.coverage.to_dict() if data.coverage is not None else None,
        "audit": [jsonable(a) for a in data.audit],
    }
