"""`proctor analyze`'s outputs: events.json, report.pdf, report.csv and snapshots/, each written atomically."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from bot.analysis.offline import Analysis
from bot.analysis.policy import Policy
from bot.common import write_atomic
from bot.report.data import ReportData
from bot.report.pdf import build_pdf
from bot.report.tables import build_csv, build_json


def write_outputs(result: Analysis, out: str | Path, *, policy: Policy, source: str | Path,
                  audio: str | Path | None = None) -> dict[str, Path]:
    """Write events.json, report.pdf, report.csv and snapshots/ into `out`.

    Each file is written to a temporary name and renamed, so a crash never
    leaves a half-written report behind.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    snaps = out / "snapshots"
    snaps.mkdir(exist_ok=True)
    interview = {
        "id": None,
        "candidate_name": Path(source).stem,
        "interviewer_email": None,
        "source": str(source),
        "audio": str(audio) if audio else None,
        "duration": result.media_seconds,
        "analyzed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "policy": policy.to_dict(),
    }
    data = ReportData(interview=interview, events=result.events, audit=[], score=result.score)
    doc = build_json(data)
    for item, event in zip(doc["events"], result.events):
        if event.snapshot:
            name = f"snapshots/{event.id}.jpg"
            write_atomic(out / name, event.snapshot)
            item["snapshot"] = name
    paths = {"events": out / "events.json", "pdf": out / "report.pdf", "csv": out / "report.csv"}
    write_atomic(paths["events"], json.dumps(doc, indent=2, default=str).encode())
    write_atomic(paths["pdf"], build_pdf(data))
    write_atomic(paths["csv"], build_csv(data).encode())
    return paths
