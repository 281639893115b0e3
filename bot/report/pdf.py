"""The report as a PDF (fpdf2): summary, score card, per-type table, timeline, needs review, every event
with its snapshot, audit log and policy.

Event times are seconds from the start of the media (offline) or of the call (live, ``started_at``); where
``started_at`` is known the report shows the clock time next to the offset.

The PDF uses DejaVu Sans (matplotlib's copy or the system's) so names like "Zoë Ñúñez" print as written, with a
CJK fallback font when one is installed (Droid Sans Fallback, Noto/WenQuanYi as TTF); with no TTF font at all it
falls back to Helvetica and replaces what Latin-1 cannot show.
"""
from __future__ import annotations

import importlib.util
import io
import math
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from bot.analysis.events import CATALOGUE, EVENT_TYPES, title
from bot.analysis.evidence import thumbnail_jpeg
from bot.analysis.policy import Policy
from bot.analysis.score import Score, needs_attention, penalty
from bot.common import parse_utc
from bot.report.data import ReportData

# ---- formatting ----------------------------------------------------------------------------------------------


def fmt_offset(seconds: float) -> str:
    """1:05 or 1:02:05."""
    s = int(round(max(0.0, seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_duration(seconds: float, *, short: bool = False) -> str:
    """12.5 s, 3 min 05 s, 1 h 02 min; `short` for narrow table cells: 3m 05s, 1h 02m."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    h, rem = divmod(int(round(seconds)), 3600)
    m, s = divmod(rem, 60)
    if short:
        return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


def fmt_datetime(dt: datetime | None) -> str:
    if dt is None:
        return "-"
    tz = f" {dt.tzname()}" if dt.tzinfo is not None else ""
    return dt.strftime("%Y-%m-%d %H:%M:%S") + tz


def fmt_detail(detail: dict[str, Any]) -> str:
    parts = []
    for k, v in detail.items():
        if v is None:
            continue
        if isinstance(v, bool):
            v = "yes" if v else "no"
        elif isinstance(v, float):
            v = f"{v:.2f}".rstrip("0").rstrip(".")
        parts.append(f"{k.replace('_', ' ')}: {v}")
    text = ", ".join(parts)
    return text if len(text) <= 140 else text[:137] + "..."



# ---- fonts ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fonts:
    regular: Path | None
    bold: Path | None
    fallbacks: tuple[Path, ...] = ()  # for scripts DejaVu lacks (CJK)


_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "C:/Windows/Fonts")
_FALLBACK_NAMES = ("DroidSansFallbackFull.ttf", "DroidSansFallback.ttf", "NotoSansSC-Regular.ttf",
                   "NotoSansCJKsc-Regular.ttf", "wqy-microhei.ttf", "SourceHanSansSC-Regular.ttf",
                   "ArialUnicode.ttf", "Arial Unicode.ttf")


@lru_cache(maxsize=1)
def find_fonts() -> Fonts:
    """DejaVu Sans (regular, bold) from matplotlib or the system, plus CJK fallbacks if installed."""
    dirs: list[Path] = []
    spec = importlib.util.find_spec("matplotlib")  # found, not imported: importing matplotlib is slow
    if spec is not None and spec.origin:
        dirs.append(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf")
    dirs += [Path(d) for d in _FONT_DIRS] + [Path.home() / ".fonts", Path.home() / ".local/share/fonts"]

    def find(name: str) -> Path | None:
        for d in dirs:
            direct = d / name
            if direct.is_file():
                return direct
        for d in dirs:
            if d.is_dir():
                for p in d.rglob(name):
                    return p
        return None

    regular, bold = find("DejaVuSans.ttf"), find("DejaVuSans-Bold.ttf")
    fallbacks = tuple(p for p in (find(n) for n in _FALLBACK_NAMES) if p is not None)
    return Fonts(regular, bold or regular, fallbacks[:1])


def _latin1(text: str) -> str:
    """What Helvetica can show: accents kept where Latin-1 has them, else stripped, else '?'."""
    out = []
    for ch in text:
        try:
            ch.encode("latin-1")
            out.append(ch)
        except UnicodeEncodeError:
            base = unicodedata.normalize("NFKD", ch).encode("latin-1", "ignore").decode("latin-1")
            out.append(base or {"\u2013": "-", "\u2014": "-", "\u2026": "...", "\u2022": "*", "\u2265": ">=",
                                "\u2264": "<="}.get(ch, "?"))
    return "".join(out)


# ---- PDF -----------------------------------------------------------------------------------------------------

MARGIN = 15.0
PAGE_W = 210.0
CONTENT_W = PAGE_W - 2 * MARGIN

INK = (33, 37, 41)
MUTED = (108, 117, 125)
RULE = (222, 226, 230)
ZEBRA = (247, 248, 250)
HEAD_FILL = (52, 58, 64)
RISK_COLORS = {"low": (46, 125, 50), "medium": (214, 128, 0), "high": (198, 40, 40)}
THUMB_W, THUMB_H = 24.0, 18.0


def _cell_padding(horizontal: float) -> Any:
    """(top/bottom, left/right) cell padding in mm; fpdf2 takes floats though its hint says int."""
    return (0, horizontal)


def _color(event_type: str) -> tuple[int, int, int]:
    kind = CATALOGUE.get(event_type)
    return kind.color if kind is not None else MUTED


class _Pdf(FPDF):
    def __init__(self, fonts: Fonts, running_head: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.running_head = running_head
        self.family = "Helvetica"
        self.set_margins(MARGIN, 16, MARGIN)
        self.set_auto_page_break(True, 18)
        if fonts.regular is not None:
            self.add_font("DejaVu", "", str(fonts.regular))
            self.add_font("DejaVu", "B", str(fonts.bold or fonts.regular))
            names = []
            for i, p in enumerate(fonts.fallbacks):
                try:
                    self.add_font(f"Fallback{i}", "", str(p))
                    names.append(f"Fallback{i}")
                except Exception:  # a broken or unsupported font file: do without it
                    continue
            if names:
                self.set_fallback_fonts(names, exact_match=False)
            self.family = "DejaVu"
        self.set_title("Interview integrity report")
        self.set_creator("proctor-bot")

    def normalize_text(self, text: str) -> str:
        if not self.is_ttf_font:
            text = _latin1(text)
        return super().normalize_text(text)

    def font(self, size: float, bold: bool = False, color: tuple[int, int, int] = INK) -> None:
        self.set_font(self.family, "B" if bold else "", size)
        self.set_text_color(*color)

    def header(self) -> None:
        if self.page_no() == 1:
            return
        self.font(7.5, color=MUTED)
        self.set_xy(MARGIN, 8)
        self.cell(CONTENT_W, 4, self.running_head, align="L")
        self.set_draw_color(*RULE)
        self.set_line_width(0.2)
        self.line(MARGIN, 12.5, PAGE_W - MARGIN, 12.5)
        self.set_y(16)

    def footer(self) -> None:
        self.set_y(-12)
        self.font(7.5, color=MUTED)
        self.cell(CONTENT_W / 2, 4, "proctor-bot interview integrity report", align="L")
        self.cell(CONTENT_W / 2, 4, f"Page {self.page_no()} of {{nb}}", align="R")

    def space_left(self) -> float:
        return self.page_break_trigger - self.get_y()

    def ensure(self, height: float) -> None:
        if self.space_left() < height:
            self.add_page()

    def section(self, title: str, need: float = 30.0) -> None:
        self.ensure(need + 12)
        self.ln(4)
        self.font(12.5, bold=True)
        self.cell(CONTENT_W, 7, title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_draw_color(*RULE)
        self.set_line_width(0.3)
        self.line(MARGIN, self.get_y(), PAGE_W - MARGIN, self.get_y())
        self.ln(2.5)

    def note(self, text: str) -> None:
        self.font(9, color=MUTED)
        self.multi_cell(CONTENT_W, 5, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)


@dataclass(frozen=True)
class _Col:
    title: str
    width: float
    align: str = "L"


class _Table:
    """A simple table that repeats its header row on every page."""

    def __init__(self, pdf: _Pdf, cols: list[_Col], *, size: float = 8.0, line_h: float = 4.2) -> None:
        self.pdf, self.cols, self.size, self.line_h = pdf, cols, size, line_h
        self.rows = 0

    def head(self, first_row: float = 12.0) -> None:
        """The header row, on a new page unless it fits with a first row under it (no orphaned headers)."""
        pdf = self.pdf
        pdf.ensure(6.5 + first_row)
        pdf.set_fill_color(*HEAD_FILL)
        pdf.font(self.size, bold=True, color=(255, 255, 255))
        x, y = MARGIN, pdf.get_y()
        for c in self.cols:
            pdf.rect(x, y, c.width, 6.5, style="F")
            pdf.set_xy(x + 1.5, y)
            pdf.cell(c.width - 3, 6.5, c.title, align=c.align)
            x += c.width
        pdf.set_xy(MARGIN, y + 6.5)

    def row(self, values: list[str], *, images: dict[int, bytes] | None = None,
            colors: dict[int, tuple[int, int, int]] | None = None, bold: bool = False) -> None:
        pdf = self.pdf
        images, colors = images or {}, colors or {}
        pdf.font(self.size, bold=bold)
        pad = 1.5
        heights = []
        for i, (c, v) in enumerate(zip(self.cols, values)):
            if i in images:
                heights.append(THUMB_H)
                continue
            lines = pdf.multi_cell(c.width, self.line_h, v, dry_run=True, output="LINES",
                                   padding=_cell_padding(pad))
            heights.append(len(lines) * self.line_h)  # type: ignore[arg-type]  # output="LINES": a list
        h = max(heights, default=self.line_h) + 2 * pad
        if pdf.space_left() < h:
            pdf.add_page()
            self.head()
            pdf.font(self.size, bold=bold)
        x, y = MARGIN, pdf.get_y()
        if self.rows % 2:
            pdf.set_fill_color(*ZEBRA)
            pdf.rect(MARGIN, y, sum(c.width for c in self.cols), h, style="F")
        for i, (c, v) in enumerate(zip(self.cols, values)):
            if i in images:
                pdf.image(io.BytesIO(images[i]), x=x + (c.width - THUMB_W) / 2, y=y + pad, w=THUMB_W, h=THUMB_H)
            else:
                if i in colors:
                    pdf.set_fill_color(*colors[i])
                    pdf.rect(x + pad, y + pad + 0.9, 2.4, 2.4, style="F")
                    pdf.set_xy(x + 3.2, y + pad)
                    pdf.multi_cell(c.width - 3.2, self.line_h, v, align=c.align, padding=_cell_padding(pad),
                                   new_x=XPos.RIGHT, new_y=YPos.TOP)
                else:
                    pdf.set_xy(x, y + pad)
                    pdf.multi_cell(c.width, self.line_h, v, align=c.align, padding=_cell_padding(pad),
                                   new_x=XPos.RIGHT, new_y=YPos.TOP)
            x += c.width
        pdf.set_draw_color(*RULE)
        pdf.set_line_width(0.15)
        pdf.line(MARGIN, y + h, MARGIN + sum(c.width for c in self.cols), y + h)
        pdf.set_xy(MARGIN, y + h)
        self.rows += 1



class _Report:
    def __init__(self, data: ReportData) -> None:
        assert data.score is not None and data.policy is not None
        self.data = data
        self.score: Score = data.score
        self.policy: Policy = data.policy
        self.iv = data.interview
        self.started = data.started_at
        self.number = {e.id: i + 1 for i, e in enumerate(data.events)}
        name = str(self.iv.get("candidate_name") or "Unnamed candidate")
        self.name = name
        self.pdf = _Pdf(find_fonts(), f"Interview integrity report  ·  {name}")

    # -- helpers --

    def when(self, t: float, sep: str = "  ") -> str:
        """Offset, and the clock time when the call's start is known."""
        t = float(round(max(0.0, t)))
        if self.started is None:
            return fmt_offset(t)
        clock = (self.started + timedelta(seconds=t)).strftime("%H:%M:%S")
        return f"{clock}{sep}+{fmt_offset(t)}"

    # -- sections --

    def build(self) -> bytes:
        pdf = self.pdf
        pdf.add_page()
        self.title()
        self.summary()
        self.by_type()
        self.timeline()
        self.needs_review()
        self.events()
        self.audit()
        self.policy_summary()
        return bytes(pdf.output())

    def title(self) -> None:
        pdf = self.pdf
        pdf.set_fill_color(*HEAD_FILL)
        pdf.rect(0, 0, PAGE_W, 4, style="F")
        pdf.set_xy(MARGIN, 12)
        pdf.font(20, bold=True)
        pdf.cell(CONTENT_W, 9, "Interview integrity report", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.font(9, color=MUTED)
        assert self.data.generated_at is not None
        kind = "Live interview" if self.started is not None else "Recorded interview"
        pdf.cell(CONTENT_W, 5, f"{kind}  ·  generated {fmt_datetime(self.data.generated_at)}",
                 new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(5)

    def summary(self) -> None:
        pdf, iv = self.pdf, self.iv
        rows: list[tuple[str, str]] = [("Candidate", self.name)]
        if iv.get("interviewer_email"):
            rows.append(("Interviewer", str(iv["interviewer_email"])))
        if iv.get("id"):
            rows.append(("Interview", str(iv["id"])))
        if self.started is not None:
            rows.append(("Started", fmt_datetime(self.started)))
            rows.append(("Ended", fmt_datetime(parse_utc(iv.get("ended_at")))))
        if iv.get("source"):
            rows.append(("Source file", Path(str(iv["source"])).name))
        if iv.get("analyzed_at"):
            rows.append(("Analysed", fmt_datetime(parse_utc(iv["analyzed_at"])) if parse_utc(
                iv["analyzed_at"]) else str(iv["analyzed_at"])))
        rows.append(("Duration", fmt_duration(self.data.duration)))
        n = len(self.data.events)
        dismissed = sum(1 for e in self.data.events if e.review == "dismissed")
        rows.append(("Events", f"{n}" + (f" ({dismissed} dismissed)" if dismissed else "")))

        top = pdf.get_y()
        card_w = 62.0
        left_w = CONTENT_W - card_w - 6
        for label, value in rows:
            pdf.set_x(MARGIN)
            pdf.font(9, color=MUTED)
            pdf.cell(26, 6, label)
            pdf.font(10, bold=label == "Candidate")
            pdf.multi_cell(left_w - 26, 6, value, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        bottom_left = pdf.get_y()

        # score card
        s = self.score
        color = RISK_COLORS.get(s.risk, INK)
        x = MARGIN + CONTENT_W - card_w
        h = 56.0
        pdf.set_draw_color(*RULE)
        pdf.set_fill_color(*ZEBRA)
        pdf.set_line_width(0.3)
        pdf.rect(x, top, card_w, h, style="DF", round_corners=True, corner_radius=2)
        pdf.set_fill_color(*color)
        pdf.rect(x, top, 2.2, h, style="F")
        pdf.set_xy(x + 5, top + 3)
        pdf.font(8.5, color=MUTED)
        pdf.cell(card_w - 8, 5, "INTEGRITY SCORE")
        pdf.set_xy(x + 5, top + 9)
        pdf.font(34, bold=True, color=color)
        value = f"{s.value:.1f}"
        pdf.cell(pdf.get_string_width(value) + 1, 15, value)
        pdf.font(11, color=MUTED)
        pdf.set_xy(pdf.get_x(), top + 16)
        pdf.cell(15, 6, "/ 100")
        # risk pill
        pdf.font(9.5, bold=True, color=(255, 255, 255))
        label = f"{s.risk.upper()} RISK"
        pw = pdf.get_string_width(label) + 8
        pdf.set_fill_color(*color)
        pdf.rect(x + 5, top + 27, pw, 7, style="F", round_corners=True, corner_radius=1.5)
        pdf.set_xy(x + 5, top + 27)
        pdf.cell(pw, 7, label, align="C")
        pdf.set_xy(x + 5, top + 37)
        if s.needs_review:
            pdf.font(9, bold=True, color=RISK_COLORS["high"])
            pdf.cell(card_w - 8, 5, "Needs human review")
        else:
            pdf.font(9, color=RISK_COLORS["low"])
            pdf.cell(card_w - 8, 5, "No review needed")
        pdf.set_xy(x + 5, top + 42.5)
        pdf.font(7.5, color=MUTED)
        sc = self.policy.scoring
        bands = f"low ≥ {sc.medium_below:g}  ·  medium ≥ {sc.high_below:g}  ·  high < {sc.high_below:g}"
        pdf.cell(card_w - 8, 4, bands)
        cov = self.data.coverage
        assert cov is not None
        pdf.set_xy(x + 5, top + 47.5)
        pdf.font(8.5, bold=cov.low, color=RISK_COLORS["high"] if cov.low else INK)
        pct = f"Analysed {round(cov.share * 100)}% of the call"
        pdf.cell(card_w - 8, 5, pct + (" - coverage low" if cov.low else ""))
        pdf.set_xy(MARGIN, max(bottom_left, top + h) + 2)
        if cov.low:
            pdf.note(cov.sentence() + " Gaps: " + "; ".join(
                f"{fmt_offset(g.start)}-{fmt_offset(g.end)} {g.reason}" for g in cov.gaps[:6])
                + (f" and {len(cov.gaps) - 6} more" if len(cov.gaps) > 6 else "") + ".")

    def by_type(self) -> None:
        pdf = self.pdf
        pdf.section("Events by type", need=20)
        by = self.score.by_type
        if not by:
            pdf.note("No events were recorded." if not self.data.events else "Every event was dismissed on review.")
            return
        duration = self.data.duration
        table = _Table(pdf, [_Col("Event type", 62), _Col("Events", 22, "R"), _Col("Total time", 32, "R"),
                             _Col("Share of interview", 36, "R"), _Col("Penalty", 28, "R")], size=8.5)
        table.head()
        for t, row in by.items():
            share = f"{100 * row['total_seconds'] / duration:.1f} %" if duration > 0 else "-"
            table.row([title(t), str(row["count"]), fmt_duration(row["total_seconds"]), share,
                       f"-{row['penalty']:.1f}"], colors={0: _color(t)})
        total = sum(r["penalty"] for r in by.values())
        table.row(["Total", str(sum(r["count"] for r in by.values())), "", "", f"-{total:.1f}"], bold=True)
        dismissed = sum(1 for e in self.data.events if e.review == "dismissed")
        if dismissed:
            pdf.ln(1)
            pdf.font(7.5, color=MUTED)
            pdf.cell(CONTENT_W, 4, f"{dismissed} event(s) dismissed on review are not counted.",
                     new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def timeline(self) -> None:
        pdf = self.pdf
        events = self.data.events
        gaps = self.data.coverage.gaps if self.data.coverage is not None else []
        types = [t for t in EVENT_TYPES if any(e.type == t for e in events)]
        types += sorted({e.type for e in events} - set(types))
        if gaps:
            types.insert(0, GAP_LANE)
        label_w, lane_h = 34.0, 7.0
        chart_h = max(1, len(types)) * lane_h
        pdf.section("Timeline", need=chart_h + 22)
        if not events and not gaps:
            pdf.note("Nothing to draw: no events.")
            return
        span = max(self.data.duration, max((e.end if e.end is not None else e.start for e in events), default=0.0),
                   max((g.end for g in gaps), default=0.0), 1.0)
        x0, w = MARGIN + label_w, CONTENT_W - label_w
        top = pdf.get_y() + 1

        def xt(t: float) -> float:
            return x0 + w * min(max(t, 0.0), span) / span

        step = _tick_step(span)
        ticks = [i * step for i in range(int(span // step) + 1)]
        # lanes
        for i, t in enumerate(types):
            y = top + i * lane_h
            if i % 2 == 0:
                pdf.set_fill_color(*ZEBRA)
                pdf.rect(x0, y, w, lane_h, style="F")
            pdf.set_xy(MARGIN, y)
            pdf.font(8, color=INK)
            pdf.cell(label_w - 2, lane_h, "Not analysed" if t == GAP_LANE else title(t), align="R")
        # grid
        pdf.set_draw_color(*RULE)
        pdf.set_line_width(0.15)
        for tk in ticks:
            pdf.line(xt(tk), top, xt(tk), top + chart_h)
        # gaps: what nobody watched (grey)
        for g in gaps:
            y = top + 1.3
            pdf.set_fill_color(*GAP_COLOR)
            pdf.rect(xt(g.start), y, max(0.7, xt(g.end) - xt(g.start)), lane_h - 2.6, style="F")
        # bars
        for e in events:
            i = types.index(e.type)
            y = top + i * lane_h + 1.3
            end = e.end if e.end is not None else span
            bx, bw = xt(e.start), max(0.7, xt(end) - xt(e.start))
            color = _color(e.type)
            if e.review == "dismissed":
                pdf.set_draw_color(*color)
                pdf.set_line_width(0.3)
                pdf.rect(bx, y, bw, lane_h - 2.6, style="D")
            else:
                pdf.set_fill_color(*color)
                pdf.rect(bx, y, bw, lane_h - 2.6, style="F")
        # axis
        pdf.set_draw_color(*MUTED)
        pdf.set_line_width(0.3)
        axis_y = top + chart_h
        pdf.line(x0, axis_y, x0 + w, axis_y)
        pdf.line(x0, top, x0, axis_y)
        pdf.font(7, color=MUTED)
        for tk in ticks:
            pdf.line(xt(tk), axis_y, xt(tk), axis_y + 1.2)
            label = fmt_offset(tk)
            lw = pdf.get_string_width(label)
            pdf.set_xy(max(x0, min(xt(tk) - lw / 2, x0 + w - lw)), axis_y + 1.5)
            pdf.cell(lw, 3.5, label)
            if self.started is not None:
                clock = (self.started + timedelta(seconds=tk)).strftime("%H:%M")
                cw = pdf.get_string_width(clock)
                pdf.set_xy(max(x0, min(xt(tk) - cw / 2, x0 + w - cw)), axis_y + 5)
                pdf.cell(cw, 3.5, clock)
        pdf.set_xy(MARGIN, axis_y + 1.5)
        pdf.cell(label_w - 2, 3.5, "time from start", align="R")
        if self.started is not None:
            pdf.set_xy(MARGIN, axis_y + 5)
            pdf.cell(label_w - 2, 3.5, "clock", align="R")
        pdf.set_xy(MARGIN, axis_y + (9.5 if self.started is not None else 6))
        pdf.font(7, color=MUTED)
        gap_note = "; grey: not analysed (" + ", ".join(sorted({g.reason for g in gaps})) + ")" if gaps else ""
        pdf.cell(CONTENT_W, 4, f"Filled bars: events; outlined bars: dismissed on review{gap_note}. "
                               f"Axis covers {fmt_duration(span)}.", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def needs_review(self) -> None:
        pdf, s = self.pdf, self.score
        pdf.section("Needs review", need=24)
        flagged = [e for e in self.data.events if needs_attention(e, self.policy)]
        reasons = []
        if s.value < self.policy.scoring.review_below:
            reasons.append(f"The score {s.value:.1f} is below the review threshold "
                           f"{self.policy.scoring.review_below:g}.")
        if flagged:
            reasons.append(f"{len(flagged)} unreviewed event(s) of high-weight types (weight >= "
                           f"{self.policy.scoring.review_weight:g}) need a decision: confirm or dismiss.")
        if not reasons:
            pdf.note("Nothing needs review: the score is above the review threshold and every high-weight "
                     "event has been reviewed.")
            return
        pdf.font(9.5, color=INK)
        for r in reasons:
            pdf.multi_cell(CONTENT_W, 5, f"•  {r}", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        if flagged:
            pdf.ln(2)
            flagged.sort(key=lambda e: -penalty(e, self.policy))
            table = _Table(pdf, [_Col("#", 10, "R"), _Col("Time", 34), _Col("Type", 38), _Col("Duration", 22, "R"),
                                 _Col("Conf.", 16, "R"), _Col("Penalty", 18, "R"), _Col("Detail", 42)])
            table.head()
            for e in flagged:
                table.row([str(self.number[e.id]), self.when(e.start), title(e.type),
                           fmt_duration(e.duration, short=True),
                           f"{e.confidence:.2f}", f"-{penalty(e, self.policy):.1f}", fmt_detail(e.detail)],
                          colors={2: _color(e.type)})

    def events(self) -> None:
        pdf = self.pdf
        pdf.section(f"All events ({len(self.data.events)})", need=30)
        if not self.data.events:
            pdf.note("No events.")
            return
        table = _Table(pdf, [_Col("#", 9, "R"), _Col("Time", 25), _Col("Type", 32), _Col("Duration", 17, "R"),
                             _Col("Conf.", 12, "R"), _Col("Review", 18), _Col("Detail", 40), _Col("Snapshot", 27)])
        table.head(first_row=THUMB_H + 3)
        for e in self.data.events:
            thumb = thumbnail_jpeg(e.snapshot)
            end = "open" if e.end is None else fmt_duration(e.duration, short=True)
            table.row([str(self.number[e.id]), self.when(e.start, sep="\n"), title(e.type), end,
                       f"{e.confidence:.2f}", e.review or "-", fmt_detail(e.detail), "" if thumb else "-"],
                      images={7: thumb} if thumb else None, colors={2: _color(e.type)})

    def audit(self) -> None:
        pdf = self.pdf
        pdf.section("Review audit log", need=20)
        if not self.data.audit:
            pdf.note("No reviews recorded.")
            return
        types = {e.id: e.type for e in self.data.events}
        table = _Table(pdf, [_Col("When", 40), _Col("By", 48), _Col("Event", 34), _Col("Action", 20),
                             _Col("Note", 38)])
        table.head()
        for a in self.data.audit:
            at = parse_utc(a.get("at"))
            eid = str(a.get("event_id") or "")
            ref = f"#{self.number[eid]} {title(types[eid])}" if eid in self.number else (eid[:12] or "-")
            table.row([fmt_datetime(at) if at else str(a.get("at") or "-"), str(a.get("by") or "-"), ref,
                       str(a.get("action") or "-"), str(a.get("note") or "")])

    def policy_summary(self) -> None:
        pdf, p = self.pdf, self.policy
        pdf.section("Policy", need=40)
        s, sc = p.sampling, p.scoring
        pdf.font(8.5, color=INK)
        pdf.multi_cell(CONTENT_W, 4.6,
                       f"Sampling: faces {s.face_fps:g} fps, objects {s.object_fps:g} fps, camera {s.camera_fps:g} "
                       f"fps, audio chunks of {s.audio_chunk:g} s.\n"
                       f"Score: 100 minus, per event, weight x confidence x (1 + {sc.per_minute:g} x minutes). "
                       f"Medium risk below {sc.medium_below:g}, high below {sc.high_below:g}; review below "
                       f"{sc.review_below:g} or for unreviewed events weighted {sc.review_weight:g} or more.",
                       new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(2)
        table = _Table(pdf, [_Col("Rule", 38), _Col("On", 10), _Col("Dwell", 16, "R"), _Col("Threshold", 20, "R"),
                             _Col("Samples", 17, "R"), _Col("Window", 17, "R"), _Col("Gap", 14, "R"),
                             _Col("Weight", 16, "R"), _Col("Labels", 32)], size=7.5, line_h=3.8)
        table.head()
        for name, r in p.rules.items():
            weight_key = "suspicious_object" if name == "extra_person" else name
            weight = sc.weights.get(weight_key)
            table.row([name.replace("_", " "), "yes" if r.enabled else "no", f"{r.dwell:g} s", f"{r.threshold:g}",
                       str(r.min_samples), f"{r.window:g} s", f"{r.gap:g} s", "-" if weight is None else f"{weight:g}",
                       ", ".join(r.labels) or "-"])


GAP_LANE = "__not_analysed__"
GAP_COLOR = (176, 180, 188)


def _tick_step(span: float) -> float:
    """A round tick interval giving about 6 to 12 ticks."""
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400):
        if span / step <= 12:
            return float(step)
    return float(10 ** math.ceil(math.log10(span / 10)))


def build_pdf(data: ReportData) -> bytes:
    return _Report(data).build()
