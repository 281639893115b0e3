"""Room membership: one candidate and one bot per interview, many interviewers."""
from __future__ import annotations

from signaling.rooms import Participant, Rooms


def test_join_and_list_in_order():
    r = Rooms()
    assert r.join("a", "s1", "interviewer", "Iris") is None
    assert r.join("a", "s2", "candidate", "Cory") is None
    assert r.join("b", "s3", "candidate", "Other") is None
    assert [p.public() for p in r.participants("a")] == [
        {"sid": "s1", "role": "interviewer", "name": "Iris"},
        {"sid": "s2", "role": "candidate", "name": "Cory"},
    ]
    assert r.get("s3") == Participant("s3", "b", "candidate", "Other")
    assert r.sid_of("a", "candidate") == "s2" and r.sid_of("a", "bot") is None
    assert len(r) == 3


def test_reconnecting_candidate_replaces_old_socket():
    r = Rooms()
    r.join("a", "old", "candidate", "Cory")
    assert r.join("a", "new", "candidate", "Cory") == "old"
    assert [p.sid for p in r.participants("a")] == ["new"]
    assert r.get("old") is None
    # the old socket's disconnect arrives later and must not remove the new one
    assert r.leave("old") is None
    assert r.sid_of("a", "candidate") == "new"


def test_one_bot_per_interview_but_many_interviewers():
    r = Rooms()
    r.join("a", "b1", "bot", "Proctor")
    assert r.join("a", "b2", "bot", "Proctor") == "b1"
    assert r.join("a", "i1", "interviewer", "A") is None
    assert r.join("a", "i2", "interviewer", "B") is None
    assert sorted(p.sid for p in r.participants("a")) == ["b2", "i1", "i2"]


def test_candidate_of_other_interview_is_not_replaced():
    r = Rooms()
    r.join("a", "c1", "candidate", "x")
    assert r.join("b", "c2", "candidate", "y") is None
    assert r.sid_of("a", "candidate") == "c1"
    assert not r.same_interview("c1", "c2")
    r.join("a", "i1", "interviewer", "z")
    assert r.same_interview("c1", "i1")
    assert not r.same_interview("c1", "nobody")


def test_leave_empties_interview():
    r = Rooms()
    r.join("a", "s1", "interviewer", "x")
    assert r.leave("s1").role == "interviewer"
    assert r.participants("a") == [] and r.interviews() == [] and len(r) == 0
