"""Reports of stored interviews: rebuilt from the database on every request.

The score is never stored as the truth: it is recomputed from the stored
events and the interview's policy, so a review (dismissing an event) or a
change of weights changes the report.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

from bot.analysis.policy import Policy
from bot.analysis.score import score
from bot.ports import Mailer, Store, UnknownInterview
from bot.report.data import ReportData
from bot.report.pdf import build_pdf
from bot.report.tables import build_csv, build_json
from bot.rooms import public_room

log = logging.getLogger(__name__)


class Reports:
    """Implements `bot.ports.Reports` over a `Store`, mailing through a `Mailer`."""

    def __init__(self, store: Store, mailer: Mailer):
        self.store = store
        self.mailer = mailer

    async def data(self, interview_id: str, *, snapshots: bool) -> ReportData:
        """The interview, its events (with their JPEGs only if `snapshots`), audit log and score."""
        interview = await self.store.get_interview(interview_id)
        if interview is None:
            raise UnknownInterview(interview_id)
        events, audit = await asyncio.gather(
            self.store.list_events(interview_id, snapshots=snapshots), self.store.audit_log(interview_id))
        if interview.get("room") is not None:  # a report never carries the room's pin or bearer token
            interview = {**interview, "room": public_room(interview["room"])}
        policy = Policy.from_dict(interview.get("policy"))
        return ReportData(interview=interview, events=events, audit=audit, score=score(events, policy))

    async def pdf(self, interview_id: str) -> bytes:
        data = await self.data(interview_id, snapshots=True)
        return await asyncio.to_thread(build_pdf, data)  # fpdf2 is CPU work: off the loop

    async def csv(self, interview_id: str) -> str:
        return build_csv(await self.data(interview_id, snapshots=False))

    async def json(self, interview_id: str) -> dict:
        return build_json(await self.data(interview_id, snapshots=False))

    async def finish(self, interview_id: str) -> dict:
        """The interview is over: mark it ended, build the PDF and mail it to the interviewer."""
        interview = await self.store.get_interview(interview_id)
        if interview is None:
            raise UnknownInterview(interview_id)
        if not interview.get("ended_at"):
            await self.store.update_interview(interview_id, status="ended",
                                              ended_at=datetime.now(timezone.utc).isoformat())
        data = await self.data(interview_id, snapshots=True)
        pdf = await asyncio.to_thread(build_pdf, data)
        s = data.score
        assert s is not None  # ReportData computes it
        name = data.interview.get("candidate_name") or "candidate"
        body = (f"The proctoring report for the interview with {name} is attached.\n\n"
                f"Integrity score: {s.value:.1f}/100, risk {s.risk}"
                f"{' - needs review' if s.needs_review else ''}.\n"
                f"{data.coverage.sentence() if data.coverage else ''}\n"
                f"Events: {len(data.events)}.\n\n"
                "Every event is a machine observation: please review it before drawing conclusions.\n")
        result = await self.mailer.send_report(
            data.interview["interviewer_email"], f"Proctoring report: {name}", body,
            [(f"proctoring-report-{interview_id}.pdf", pdf, "application/pdf")])
        await self.store.update_interview(interview_id, report_sent_at=datetime.now(timezone.utc).isoformat(),
                                          report_delivery=result.public())
        log.info("report for interview %s: %s", interview_id, result.describe())
        assert data.coverage is not None
        return {"score": s.value, "risk": s.risk, "needs_review": s.needs_review,
                "coverage": round(data.coverage.share, 4), "events": len(data.events), "delivery": result.public()}
