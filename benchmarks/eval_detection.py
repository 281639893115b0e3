"""Precision, recall and median delay per event type on a labelled set composed from ../shared/media.

    PROCTOR_MODELS_DIR=../shared/models .venv/bin/python benchmarks/eval_detection.py [--only NAME ...]

Each scenario is a list of segments with per-segment truth: ``expect`` (event types that must happen there)
and ``allow`` (types that may honestly happen there, e.g. the real second person at the edge of student.mkv;
counted neither way). Object events are scored per label: ``suspicious_object/cell phone``.

- recall: share of the segments expecting a type that have an event of that type overlapping them (1 s slack
  after the segment's end);
- precision: share of the events of a type that start in a segment expecting that type (or within 1 s after
  its end); an event that starts in a segment only allowing it is not counted; anything else is a false alarm
  (listed), e.g. face_missing starting while the candidate is still in the seat with the head down;
- delay: the event's start minus the segment's start, median over the found segments.

``PROCTOR_CODE=/path/to/other/checkout`` runs another version of the code on the same set (before/after).
Composed videos are cached in ``$TMPDIR/proctor-eval``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if os.environ.get("PROCTOR_CODE"):
    sys.path.insert(0, os.environ["PROCTOR_CODE"])

from adapters.models import model_paths  # noqa: E402
from bot.analysis.offline import analyze_file  # noqa: E402
from bot.analysis.policy import Policy  # noqa: E402
from bot.settings import Settings  # noqa: E402
from tests.support.paths import MEDIA  # noqa: E402
from tests.support.scenario import Segment, black, clip, compose, frozen, lit, postered, still  # noqa: E402

V, IMG, ASL = MEDIA / "video", MEDIA / "images", MEDIA / "video/asl"
PHONE = "suspicious_object/cell phone"
BOOK = "suspicious_object/book"
LAPTOP = "suspicious_object/laptop"
PERSON = "suspicious_object/person"


def seg(name: str, seconds: float, source, expect=(), allow=(), speech=None) -> tuple[Segment, set[str]]:
    return Segment(name, seconds, source, set(expect), speech), set(allow)


# (segment, allowed) lists. Truth read by eye (MANIFEST.md of shared/media says what is in each file).
SCENARIOS: dict[str, list[tuple[Segment, set[str]]]] = {
    # the composed interview of tests/test_analyze.py: candidate = student.mkv's person (A)
    "interview": [
        seg("present", 6, clip(V / "student.mkv"), allow={PERSON}),  # a real second person at the edge
        seg("no_face", 7, still(IMG / "dog.jpg"), expect={"face_missing"}),
        seg("two_faces", 4, still(IMG / "two_people.jpg"), expect={"multiple_faces"}),  # one fact, one event
        seg("present2", 4, clip(V / "thanks.mkv"), allow={"identity_changed"}),  # person B: 4 s, at the dwell
        seg("turned", 5, clip(V / "head-pose-face-detection-female.gif", slice(0, 6)), expect={"looking_away"},
            allow={"identity_changed"}),
        seg("present3", 3, clip(V / "student.mkv"), allow={PERSON}),
        seg("desk", 4, still(IMG / "desk_phone_laptop_book.jpg"), expect={LAPTOP},
            allow={"face_missing", PHONE, BOOK}),
        seg("voice", 4, still(IMG / "astronaut.png"), speech=MEDIA / "audio/english.wav",
            expect={"background_voice"}, allow={"identity_changed"}),
        seg("blocked", 4, black(), expect={"camera_blocked"}, allow={"face_missing"}),
        seg("present4", 3, clip(V / "student.mkv"), allow={PERSON}),
        seg("frozen", 7, frozen(V / "thanks.mkv", 10), expect={"camera_frozen", "identity_changed"}),
        seg("end", 2, clip(V / "student.mkv"), allow={PERSON}),
    ],
    # another person takes the seat; the same person in another clip and under dim light is not an event
    "identity": [
        seg("A", 8, clip(ASL / "again.mkv"), allow={PERSON}),
        seg("A_other_clip", 6, clip(ASL / "brother.mkv"), allow={PERSON}),
        seg("B_swap", 10, clip(ASL / "bird.mkv"), expect={"identity_changed"}, allow={PERSON}),
        seg("A_back", 6, clip(V / "student.mkv"), allow={PERSON}),
        seg("E_swap", 10, clip(ASL / "hungry.mkv"), expect={"identity_changed"}, allow={PERSON}),
        seg("A_back2", 6, clip(ASL / "again.mkv"), allow={PERSON}),
        seg("D_swap", 10, clip(ASL / "night.mkv"), expect={"identity_changed"}, allow={PERSON}),
        seg("A_end", 4, clip(ASL / "brother.mkv"), allow={PERSON}),
    ],
    # a man at a desk looks down at his lap, takes a phone up and looks at it; the same in profile; an empty room
    "phone": [
        seg("at_camera", 6, clip(V / "phone_in_hand_front.mp4", slice(72, 87)), allow={PERSON}),  # a coat
        seg("head_down", 6, clip(V / "phone_in_hand_front.mp4", slice(15, 29)), allow={"looking_away", PERSON}),
        seg("phone_front", 8, clip(V / "phone_in_hand_front.mp4", slice(42, 63)), expect={PHONE, "looking_away"},
            allow={PERSON}),
        seg("at_camera2", 5, clip(V / "phone_in_hand_front.mp4", slice(72, 87)), allow={PERSON}),
        seg("phone_profile", 8, clip(V / "phone_in_hand_profile.mp4", slice(12, 53)),
            expect={PHONE, "looking_away"}, allow={"identity_changed"}),
        seg("profile_hidden", 8, clip(V / "phone_in_hand_profile.mp4", slice(13, 19)),
            expect={"looking_away", PHONE}),
        seg("hands_down", 5, clip(V / "phone_in_hand_profile.mp4", slice(53, 70)), allow={"looking_away"}),
        seg("empty_room", 20, clip(V / "one-by-one-person-detection.mp4", slice(0, 200)),
            expect={"face_missing"}),
    ],
    # hard negatives: ID badges on lanyards, hands near the face (ASL signing), a head turned briefly, a poster
    # with faces, the light changing
    "negatives": [
        seg("badge_A", 8, clip(V / "student.mkv"), allow={PERSON}),
        seg("badge_A2", 6, clip(ASL / "again.mkv"), allow={PERSON}),
        seg("badge_A3", 6, clip(ASL / "brother.mkv"), allow={PERSON}),
        seg("gif_brief_turns", 6, clip(V / "head-pose-face-detection-female.gif", slice(6, 23)),
            allow={"identity_changed", "looking_away"}),
        seg("badge_A4", 8, clip(V / "student.mkv"), allow={PERSON}),
        # a poster of two people on the wall behind the candidate; the light going down and up
        seg("poster", 10, postered(clip(V / "student.mkv"), IMG / "two_people.jpg"), allow={PERSON}),
        seg("lights_down", 6, lit(clip(V / "student.mkv"), 0.45), allow={PERSON}),
        seg("lights_up", 6, lit(clip(ASL / "again.mkv"), 1.4), allow={PERSON}),
    ],
}


def score(timeline, allowed: list[set[str]], events) -> tuple[dict, list[str]]:
    """Per type: found truth segments, their delays, true/false events."""
    stats: dict[str, dict] = defaultdict(lambda: {"truth": 0, "found": 0, "delays": [], "tp": 0, "fp": 0})
    alarms: list[str] = []

    def kind(e) -> str:
        return f"suspicious_object/{e.detail.get('label')}" if e.type == "suspicious_object" else e.type

    def overlaps(e, s: float, t: float) -> bool:
        return e.start < t and (e.end if e.end is not None else e.start) > s

    for (start, end, sg), _ in zip(timeline.segments, allowed):
        for k in sg.expect:
            stats[k]["truth"] += 1
            hits = [e for e in events if kind(e) == k and overlaps(e, start, end + 1.0)]
            if hits:
                stats[k]["found"] += 1
                stats[k]["delays"].append(min(e.start for e in hits) - start)
    for e in events:
        k = kind(e)
        spans = [(s, t, sg, al) for (s, t, sg), al in zip(timeline.segments, allowed) if s <= e.start < t + 1.0]
        if any(k in sg.expect for *_, sg, _ in spans):
            stats[k]["tp"] += 1
        elif any(k in al for *_, al in spans):
            continue
        else:
            stats[k]["fp"] += 1
            alarms.append(f"{k} {e.start:.1f}-{(e.end or 0):.1f} s in {','.join(sg.name for *_, sg, _ in spans)}")
    return stats, alarms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", help="scenario names")
    args = ap.parse_args()
    cache = Path(tempfile.gettempdir()) / "proctor-eval"
    cache.mkdir(exist_ok=True)
    total: dict[str, dict] = defaultdict(lambda: {"truth": 0, "found": 0, "delays": [], "tp": 0, "fp": 0})
    for name, items in SCENARIOS.items():
        if args.only and name not in args.only:
            continue
        segments = [s for s, _ in items]
        timeline = compose(cache / f"{name}.mp4", segments)  # cheap next to the analysis; always fresh
        started = time.process_time()
        analysis = analyze_file(timeline.path, models=model_paths(Settings.from_env()), policy=Policy(), progress=False)
        stats, alarms = score(timeline, [a for _, a in items], analysis.events)
        print(f"## {name}: {timeline.duration:.0f} s, {len(analysis.events)} events, "
              f"{time.process_time() - started:.0f} s CPU")
        for e in analysis.events:
            print(f"   {e.type:18} {e.start:6.1f}-{(e.end or 0):6.1f} {e.detail}")
        for a in alarms:
            print(f"   FALSE ALARM {a}")
        for k, v in stats.items():
            t = total[k]
            for f in ("truth", "found", "tp", "fp"):
                t[f] += v[f]
            t["delays"] += v["delays"]
    print(f"\n{'event type':32} {'precision':>9} {'recall':>9} {'median delay':>13}")
    for k in sorted(total):
        v = total[k]
        p = f"{v['tp'] / (v['tp'] + v['fp']):.2f} ({v['tp']}/{v['tp'] + v['fp']})" if v["tp"] + v["fp"] else "-"
        r = f"{v['found'] / v['truth']:.2f} ({v['found']}/{v['truth']})" if v["truth"] else "-"
        d = f"{statistics.median(v['delays']):.1f} s" if v["delays"] else "-"
        print(f"{k:32} {p:>9} {r:>9} {d:>13}")


if __name__ == "__main__":
    main()
