"""Reports: PDF with real JPEG snapshots and Unicode names, CSV, JSON."""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.analysis.events import CATALOGUE, Event, title
from bot.analysis.policy import Policy
from bot.analysis.score import score
from bot.report import pdf as report
from bot.report.data import ReportData
from bot.report.pdf import build_pdf, find_fonts
from bot.report.tables import build_csv, build_json
from tests.support.clients import pdf_text
from tests.support.paths import MEDIA

IMAGES = MEDIA / "images"
NAME = "Zoë Ñúñez"
CJK_NAME = "李雷"

needs_pdftotext = pytest.mark.skipif(shutil.which("pdftotext") is None,
                                     reason="pdftotext (poppler-utils) is not installed")
needs_pdftoppm = pytest.mark.skipif(shutil.which("pdftoppm") is None,
                                    reason="pdftoppm (poppler-utils) is not installed: cannot render pages")


def snapshots() -> list[bytes]:
    """JPEG crops of the shared test images, like the pipeline's evidence frames."""
    paths = sorted(IMAGES.glob("*.jpg"))
    if not paths:
        pytest.skip(f"no shared test images in {IMAGES}")
    out = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("RGB")
            w, h = im.size
            crop = im.crop((w // 8, h // 8, w // 8 + min(w - w // 8, 640), h // 8 + min(h - h // 8, 480)))
            buf = io.BytesIO()
            crop.save(buf, format="JPEG", quality=85)
            out.append(buf.getvalue())
    return out


def live_interview(name: str = NAME) -> dict:
    return {
        "id": "iv-123",
        "candidate_name": name,
        "interviewer_email": "lead@example.com",
        "started_at": "2025-03-04T14:00:00+00:00",
        "ended_at": datetime(2025, 3, 4, 14, 20, tzinfo=timezone.utc),  # the store may hand back datetimes
        "policy": {"rules": {"looking_away": {"dwell": 4.0}}},
        # the bot joined 5 s in and analysed the rest (its heartbeats, as the server keeps them)
        "bot_first_at": 5.0,
        "bot_coverage": {"a1": {"samples": {"faces": 5 * 1195, "objects": 1195, "camera": 2 * 1195},
                                "audio_seconds": 1195.0, "since": 5.0}},
    }


def sample_events() -> list[Event]:
    snaps = snapshots()
    return [
        Event("face_missing", 30.0, 42.5, 0.97, {}, snaps[0], interview_id="iv-123"),
        Event("suspicious_object", 95.0, 131.0, 0.72, {"label": "cell phone", "confidence": 0.81},
              snaps[1 % len(snaps)], interview_id="iv-123"),
        Event("multiple_faces", 300.0, 312.0, 0.9, {"count": 2}, snaps[2 % len(snaps)], interview_id="iv-123",
              review="confirmed"),
        Event("looking_away", 400.0, 406.0, 0.8, {"yaw": 41.5, "pitch": 3.0}, None, interview_id="iv-123",
              review="dismissed"),
        Event("background_voice", 610.0, 617.5, 0.54, {"level_db": -23.4, "face_visible": False},
              snaps[3 % len(snaps)], interview_id="iv-123"),
        Event("tab_hidden", 900.0, 960.0, 1.0, {}, None, interview_id="iv-123"),
    ]


def audit_log(events: list[Event]) -> list[dict]:
    return [
        {"at": "2025-03-04T14:21:00+00:00", "by": "lead@example.com", "event_id": events[2].id,
         "action": "confirmed", "note": "A second person entered — seen clearly"},
        {"at": datetime(2025, 3, 4, 14, 22, tzinfo=timezone.utc), "by": "lead@example.com",
         "event_id": events[3].id, "action": "dismissed", "note": "Reading the question from the shared screen"},
    ]


def page_count(pdf: bytes) -> int:
    return len(re.findall(rb"/Type /Page\b(?!s)", pdf))


def test_report_data_defaults_from_interview():
    events = sample_events()
    data = ReportData(interview=live_interview(), events=list(reversed(events)))
    assert [e.start for e in data.events] == sorted(e.start for e in events)
    assert data.policy is not None and data.policy.rules["looking_away"].dwell == 4.0
    assert data.score == score(events, data.policy)
    assert data.duration == 20 * 60


@needs_pdftotext
def test_pdf_text_has_name_score_types_and_times(tmp_path: Path):
    events = sample_events()
    data = ReportData(interview=live_interview(f"{NAME} {CJK_NAME}"), events=events, audit=audit_log(events))
    pdf = build_pdf(data)
    assert pdf.startswith(b"%PDF")
    text = pdf_text(pdf)
    assert NAME in text
    if find_fonts().fallbacks:
        assert CJK_NAME in text
    assert data.score is not None and f"{data.score.value:.1f}" in text
    assert f"{data.score.risk.upper()} RISK" in text
    for e in events:
        assert title(e.type) in text
    for section in ("Events by type", "Timeline", "Needs review", "All events (6)", "Review audit log", "Policy"):
        assert section in text
    flat = " ".join(text.split())  # table cells wrap
    assert "lead@example.com" in text and "Reading the question from the shared screen" in flat
    # live: clock time and offset
    assert "14:01:35" in text and "+1:35" in text
    assert "20 min 00 s" in text


@needs_pdftotext
def test_offline_report_shows_offsets_and_source(tmp_path: Path):
    interview = {"id": None, "candidate_name": "student", "interviewer_email": None,
                 "source": "/media/student.mkv", "duration": 95.3, "policy": Policy().to_dict()}
    events = [Event("suspicious_object", 30.0, 41.0, 0.62, {"label": "cell phone", "confidence": 0.71},
                    snapshots()[0])]
    # a fixed generation time: at minute 14 of any hour, "generated ...:14:..." made the "14:" check fail
    generated = datetime(2026, 1, 1, 9, 5, tzinfo=timezone.utc)
    text = pdf_text(build_pdf(ReportData(interview=interview, events=events, generated_at=generated)))
    assert "student.mkv" in text and "1 min 35 s" in text
    assert "0:30" in text and "14:" not in text


@needs_pdftotext
def test_hundreds_of_events_paginate(tmp_path: Path):
    snaps = snapshots()
    kinds = ["face_missing", "looking_away", "suspicious_object", "background_voice", "eyes_closed"]
    events = [Event(kinds[i % len(kinds)], 5.0 * i, 5.0 * i + 3.0, 0.8, {"n": i}, snaps[i % len(snaps)])
              for i in range(300)]
    pdf = build_pdf(ReportData(interview=live_interview(), events=events))
    pages = page_count(pdf)
    assert pages > 20
    text = pdf_text(pdf, "-layout")
    assert f"Page {pages} of {pages}" in text
    assert "All events (300)" in text
    # the events table repeats its header on each page it spans, and every event is listed
    assert text.count("Snapshot") >= 20
    numbers = set(re.findall(r"^\s*(\d{1,3})\s+14:\d\d:\d\d", text, flags=re.M))
    assert {str(i) for i in range(1, 301)} <= numbers


def test_core_font_fallback_when_no_ttf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(report, "find_fonts", lambda: report.Fonts(None, None))
    events = sample_events()
    pdf = build_pdf(ReportData(interview=live_interview(f"{NAME} {CJK_NAME} — ≥"), events=events,
                               audit=audit_log(events)))
    assert pdf.startswith(b"%PDF") and page_count(pdf) >= 2
    if shutil.which("pdftotext"):
        assert f"{NAME} ?? - >=" in pdf_text(pdf)


def test_fonts_found():
    fonts = find_fonts()
    assert fonts.regular is not None and fonts.regular.name == "DejaVuSans.ttf"
    assert fonts.bold is not None


@needs_pdftoppm
def test_pages_render(tmp_path: Path):
    """Page 1 (summary, score, table, timeline) renders; the timeline shows each type's colour."""
    events = sample_events()
    pdf_path = tmp_path / "report.pdf"
    pdf_path.write_bytes(build_pdf(ReportData(interview=live_interview(), events=events, audit=audit_log(events))))
    subprocess.run(["pdftoppm", "-r", "60", "-png", "-f", "1", "-l", "2", str(pdf_path), str(tmp_path / "page")],
                   check=True)
    pngs = sorted(tmp_path.glob("page-*.png"))
    assert len(pngs) == 2
    with Image.open(pngs[0]) as im:
        page = im.convert("RGB")
    assert abs(page.width - 496) <= 2 and abs(page.height - 702) <= 2  # A4 at 60 dpi
    colors = {tuple(int(v) for v in c) for c in np.unique(np.asarray(page).reshape(-1, 3), axis=0)}

    def present(rgb: tuple[int, int, int]) -> bool:
        return any(sum(abs(a - b) for a, b in zip(rgb, c)) <= 12 for c in colors)

    for e in events:
        if e.review != "dismissed":
            assert present(CATALOGUE[e.type].color), e.type
    assert present(report.RISK_COLORS[ReportData(interview=live_interview(), events=events).score.risk])
    with Image.open(pngs[1]) as im:  # page 2: event rows with their JPEG thumbnails
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 500


def test_csv_rows():
    events = sample_events()
    text = build_csv(ReportData(interview=live_interview(), events=events))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["id", "type", "start", "end", "duration", "confidence", "review", "detail"]
    assert [r["id"] for r in rows if r["type"] != "not_analysed"] == [e.id for e in events]
    gaps = [r for r in rows if r["type"] == "not_analysed"]  # what was not watched, as rows of their own
    assert len(gaps) == 1 and float(gaps[0]["end"]) == 5.0 and json.loads(gaps[0]["detail"]) == {
        "reason": "bot not invited yet"}
    phone = rows[1]
    assert phone["type"] == "suspicious_object" and float(phone["duration"]) == 36.0
    assert json.loads(phone["detail"]) == {"label": "cell phone", "confidence": 0.81}
    assert rows[3]["review"] == "dismissed" and rows[0]["review"] == ""


def test_json_document():
    events = sample_events() + [Event("face_missing", 1000.0, None, 0.9)]
    doc = build_json(ReportData(interview=live_interview(), events=events, audit=audit_log(events)))
    text = json.dumps(doc)  # JSON-ready: datetimes turned into ISO strings, no bytes
    assert "snapshot" not in text
    assert set(doc) == {"interview", "events", "score", "coverage", "audit"}
    assert doc["interview"]["ended_at"] == "2025-03-04T14:20:00+00:00"
    assert set(doc["score"]) == {"value", "risk", "needs_review", "by_type"}
    assert doc["score"]["by_type"]["suspicious_object"]["count"] == 1
    assert "looking_away" not in doc["score"]["by_type"]  # dismissed
    assert len(doc["events"]) == 7 and doc["events"][-1]["end"] is None
    assert doc["audit"][1]["at"] == "2025-03-04T14:22:00+00:00"


def test_changing_weights_changes_the_report_score():
    events = sample_events()
    base = ReportData(interview=live_interview(), events=events)
    iv = live_interview()
    iv["policy"] = {"scoring": {"weights": {"tab_hidden": 30.0}}}
    heavier = ReportData(interview=iv, events=events)
    assert base.score is not None and heavier.score is not None
    assert heavier.score.value < base.score.value


def test_coverage_says_how_much_was_watched_and_a_mostly_unwatched_interview_is_not_low_risk():
    """The bot watched 41% of a 20 min call (it came 8 min late, then a restart cost 3 min): the score card
    says so, the gaps are on the timeline and in JSON, and the risk is not "low" although no event fired."""
    interview = {**live_interview(), "bot_first_at": 480.0,
                 "bot_gaps": [{"from": 700.0, "to": 880.0, "reason": "bot restarting"}],
                 "bot_coverage": {"a1": {"samples": {"faces": 5 * 220, "objects": 220, "camera": 440},
                                         "audio_seconds": 220.0, "since": 480.0},
                                  "b2": {"samples": {"faces": 5 * 272, "objects": 272, "camera": 544},
                                         "audio_seconds": 272.0, "since": 880.0}}}
    data = ReportData(interview=interview, events=[])
    assert data.coverage is not None and round(data.coverage.share * 100) == 41
    assert data.score is not None and data.score.value == 100.0
    assert data.score.risk == "medium" and data.score.needs_review  # not "low": mostly unwatched
    doc = build_json(data)
    assert doc["coverage"]["analysed_seconds"]["faces"] == 492.0
    assert [(g["reason"], g["start"], g["end"]) for g in doc["coverage"]["gaps"]] == [
        ("bot not invited yet", 0.0, 480.0), ("bot restarting", 700.0, 880.0)]
    text = pdf_text(build_pdf(data))
    assert "Analysed 41% of the call" in text and "coverage low" in text
    assert "Not analysed" in text and "bot restarting" in text

    watched = ReportData(interview=live_interview(), events=[])
    assert watched.score is not None and watched.score.risk == "low" and not watched.coverage.low
    assert "Analysed 100% of the call" in pdf_text(build_pdf(watched))


def test_json_never_shows_an_old_delivery_line_with_a_server_path():
    old = {**live_interview(), "report_delivery": "written to /srv/proctor/outbox/20260101-report.eml"}
    assert "report_delivery" not in build_json(ReportData(interview=old, events=[]))["interview"]
    new = {**live_interview(), "report_delivery": {"delivered": "outbox", "to": ["iris@example.com"]}}
    assert build_json(ReportData(interview=new, events=[]))["interview"]["report_delivery"] == {
        "delivered": "outbox", "to": ["iris@example.com"]}
