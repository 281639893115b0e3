"""Who is in which interview: interview id -> participants (sid, role, name).

At most one candidate socket and one bot socket per interview: a newcomer in one of
those roles replaces the old socket, and `join` returns the old sid so the server can
disconnect it. Interviewers may have several sockets (two tabs, two people).
"""
from __future__ import annotations

from dataclasses import dataclass

SINGLE_ROLES = ("candidate", "bot")


@dataclass(frozen=True, slots=True)
class Participant:
    sid: str
    interview_id: str
    role: str
    name: str

    def public(self) -> dict[str, str]:
        return {"sid": self.sid, "role": self.role, "name": self.name}


class Rooms:
    def __init__(self) -> None:
        self._by_sid: dict[str, Participant] = {}
        self._by_interview: dict[str, dict[str, Participant]] = {}  # insertion ordered

    def join(self, interview_id: str, sid: str, role: str, name: str) -> str | None:
        """Add a socket; returns the sid it replaces (same interview, candidate or bot), if any."""
        if sid in self._by_sid:
            self.leave(sid)
        members = self._by_interview.setdefault(interview_id, {})
        replaced = None
        if role in SINGLE_ROLES:
            old = next((p for p in members.values() if p.role == role), None)
            if old is not None:
                self.leave(old.sid)
                replaced = old.sid
                members = self._by_interview.setdefault(interview_id, {})
        p = Participant(sid=sid, interview_id=interview_id, role=role, name=name)
        members[sid] = p
        self._by_sid[sid] = p
        return replaced

    def leave(self, sid: str) -> Participant | None:
        """Remove a socket; None if it was not (or no longer) a member."""
        p = self._by_sid.pop(sid, None)
        if p is None:
            return None
        members = self._by_interview.get(p.interview_id)
        if members is not None:
            members.pop(sid, None)
            if not members:
                del self._by_interview[p.interview_id]
        return p

    def get(self, sid: str) -> Participant | None:
        return self._by_sid.get(sid)

    def participants(self, interview_id: str) -> list[Participant]:
        return list(self._by_interview.get(interview_id, {}).values())

    def sid_of(self, interview_id: str, role: str) -> str | None:
        """The sid of the (first) socket with this role in the interview."""
        return next((p.sid for p in self.participants(interview_id) if p.role == role), None)

    def same_interview(self, a: str, b: str) -> bool:
        pa, pb = self._by_sid.get(a), self._by_sid.get(b)
        return pa is not None and pb is not None and pa.interview_id == pb.interview_id

    def interviews(self) -> list[str]:
        return list(self._by_interview)

    def __len__(self) -> int:
        return len(self._by_sid)
