"""`proctor analyze`'s outputs: events.json, report.pdf, report.csv and snapshots/, each written atomically."""
from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from bot.analysis.offline import Analysis
from bot.analysis.policy import Policy
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
            _atomic_write(out / name, event.snapshot)
            item["snapshot"] = name
    paths = {"events": out / "events.json", "pdf": out / "report.pdf", "csv": out / "report.csv"}
    _atomic_write(paths["events"], json.dumps(doc, indent=2, default=str).encode())
    _atomic_write(paths["pdf"], build_pdf(data))
    _atomic_write(paths["csv"], build_csv(data).encode())
    return paths


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
