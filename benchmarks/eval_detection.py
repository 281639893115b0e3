"""Precision, recall and median delay per event type on a labelled set composed from ../shared/media.

    PROCTOR_MODELS_DIR=../shared/models .venv/bin/python benchmarks/eval_detection.py [--live] [--only NAME ...]

Each scenario is a list of segments with per-segment truth: ``expect`` (event types that must happen there)
and ``allow`` (types that may honestly happen there, e.g. the real second person at the edge of student.mkv;
counted neither way). Object events are scored per label: ``suspicious_object/cell phone``.

- recall: share of the segments expecting a type that have an event of that type overlapping them (1 s slack
  after the segment's end);
- precision: share of the events of a type that start in a segment expecting that type (or within 1 s after
  its end); an event that starts in a segment only allowing it is not counted; anything else is a false alarm
  (listed), e.g. face_missing starting while the candidate is still in the seat with the head down;
- delay: the event's start minus the segment's start, median over the found segments.

``--live`` also runs the live path on each chosen scenario, before the offline one: the real app in this process
(`tests.support.clients.served`: server, in-process bot, embedded database), an interviewer socket, and an
aiortc candidate (`tests.support.candidate.CandidatePeer`) that answers the bot's offer with the composed file
played ONCE in real time (`Playback`; rate-limited to the bot's ``maxFramerate`` as the real page does). When
the file has been sent (+ ``LINGER``) the interview is ended through the API and its stored events are read back
(``GET /api/interviews/{id}/events``). Live times are on the call's clock; the candidate notes the call-clock time
at which it handed on media time 0 (wall time of its first frame minus the interview's ``started_at``, the bot's
clock origin), and every event is shifted by it: the offset comes from the sender, never from the events, so the
transport (VP8/Opus, RTP, jitter buffer, decoding) and the bot's sampling count in the live delays. Each live
scenario takes its length in real time plus ~10 s to start (models, connection).

Clip segments are played as a live camera sends them (``cam``: looped, with fresh sensor noise of +-2 levels on
every frame): a looped frame repeated exactly is what a frozen feed sends, and a short loop sampled at the right
phase read as frozen live (a 6-frame slice comes back every 1/3 s).

``PROCTOR_CODE=/path/to/other/checkout`` runs another version of the code on the same set (before/after).
Composed videos are cached in ``$TMPDIR/proctor-eval``.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if os.environ.get("PROCTOR_CODE"):
    sys.path.insert(0, os.environ["PROCTOR_CODE"])

import av  # noqa: E402
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack  # noqa: E402

from adapters.models import model_paths  # noqa: E402
from bot.analysis.events import Event  # noqa: E402
from bot.analysis.offline import analyze_file  # noqa: E402
from bot.analysis.policy import Policy  # noqa: E402
from bot.settings import Settings  # noqa: E402
from tests.support.candidate import CandidatePeer  # noqa: E402
from tests.support.clients import Listener, http, served  # noqa: E402
from tests.support.paths import MEDIA  # noqa: E402
from tests.support.scenario import (  # noqa: E402
    Segment,
    black,
    clip,
    compose,
    frozen,
    leaning,
    lit,
    postered,
    sensor,
    still,
)
from tests.support.waiting import wait_for  # noqa: E402

V, IMG, ASL = MEDIA / "video", MEDIA / "images", MEDIA / "video/asl"
PHONE = "suspicious_object/cell phone"
BOOK = "suspicious_object/book"
LAPTOP = "suspicious_object/laptop"
PERSON = "suspicious_object/person"


def seg(name: str, seconds: float, source, expect=(), allow=(), speech=None) -> tuple[Segment, set[str]]:
    return Segment(name, seconds, source, set(expect), speech), set(allow)


def cam(path, frames: slice | None = None):
    """A clip as a live camera sends it: looped (``clip``), with fresh sensor noise on every frame, so a loop
    never repeats a picture exactly (only the ``frozen`` segments do, as a frozen feed does)."""
    return sensor(clip(path, frames))


# (segment, allowed) lists. Truth read by eye (MANIFEST.md of shared/media says what is in each file).
SCENARIOS: dict[str, list[tuple[Segment, set[str]]]] = {
    # the composed interview of tests/test_analyze.py: candidate = student.mkv's person (A)
    "interview": [
        seg("present", 6, cam(V / "student.mkv"), allow={PERSON}),  # a real second person at the edge
        seg("no_face", 7, still(IMG / "dog.jpg"), expect={"face_missing"}),
        seg("two_faces", 4, still(IMG / "two_people.jpg"), expect={"multiple_faces"}),  # one fact, one event
        seg("present2", 4, cam(V / "thanks.mkv"), allow={"identity_changed"}),  # person B: 4 s, at the dwell
        seg("turned", 5, cam(V / "head-pose-face-detection-female.gif", slice(0, 6)), expect={"looking_away"},
            allow={"identity_changed"}),
        seg("present3", 3, cam(V / "student.mkv"), allow={PERSON}),
        seg("desk", 4, still(IMG / "desk_phone_laptop_book.jpg"), expect={LAPTOP},
            allow={"face_missing", PHONE, BOOK}),
        seg("voice", 4, still(IMG / "astronaut.png"), speech=MEDIA / "audio/english.wav",
            expect={"background_voice"}, allow={"identity_changed"}),
        seg("blocked", 4, black(), expect={"camera_blocked"}, allow={"face_missing"}),
        seg("present4", 3, cam(V / "student.mkv"), allow={PERSON}),
        seg("frozen", 7, frozen(V / "thanks.mkv", 10), expect={"camera_frozen", "identity_changed"}),
        seg("end", 2, cam(V / "student.mkv"), allow={PERSON}),
    ],
    # another person takes the seat; the same person in another clip and under dim light is not an event
    "identity": [
        seg("A", 8, cam(ASL / "again.mkv"), allow={PERSON}),
        seg("A_other_clip", 6, cam(ASL / "brother.mkv"), allow={PERSON}),
        seg("B_swap", 10, cam(ASL / "bird.mkv"), expect={"identity_changed"}, allow={PERSON}),
        seg("A_back", 6, cam(V / "student.mkv"), allow={PERSON}),
        seg("E_swap", 10, cam(ASL / "hungry.mkv"), expect={"identity_changed"}, allow={PERSON}),
        seg("A_back2", 6, cam(ASL / "again.mkv"), allow={PERSON}),
        seg("D_swap", 10, cam(ASL / "night.mkv"), expect={"identity_changed"}, allow={PERSON}),
        seg("A_end", 4, cam(ASL / "brother.mkv"), allow={PERSON}),
    ],
    # the same with person B as the candidate: A, D and E take the seat in turn; B in two other clips is no event
    "identity_b": [
        seg("B", 8, cam(ASL / "milk.mkv"), allow={PERSON}),
        seg("B_other_clip", 6, cam(ASL / "bird.mkv"), allow={PERSON}),
        seg("A_swap", 10, cam(ASL / "brother.mkv"), expect={"identity_changed"}, allow={PERSON}),
        seg("B_back", 6, cam(V / "thanks.mkv"), allow={PERSON}),
        # D screws his eyes up signing "eat": the lids look shut in about half of the clip's frames (the mesh's
        # eye aspect 0.04-0.11 there, 0.16 at the start): eyes_closed is allowed, neither expected nor false
        seg("D_swap", 10, cam(ASL / "eat.mkv"), expect={"identity_changed"}, allow={PERSON, "eyes_closed"}),
        seg("B_back2", 6, cam(ASL / "milk.mkv"), allow={PERSON}),
        seg("E_swap", 10, cam(ASL / "want.mkv"), expect={"identity_changed"}, allow={PERSON}),
        seg("B_end", 4, cam(ASL / "bird.mkv"), allow={PERSON}),
    ],
    # a man at a desk looks down at his lap, takes a phone up and looks at it; the same in profile; an empty room
    "phone": [
        seg("at_camera", 6, cam(V / "phone_in_hand_front.mp4", slice(72, 87)), allow={PERSON}),  # a coat
        seg("head_down", 6, cam(V / "phone_in_hand_front.mp4", slice(15, 29)), allow={"looking_away", PERSON}),
        seg("phone_front", 8, cam(V / "phone_in_hand_front.mp4", slice(42, 63)), expect={PHONE, "looking_away"},
            allow={PERSON}),
        seg("at_camera2", 5, cam(V / "phone_in_hand_front.mp4", slice(72, 87)), allow={PERSON}),
        seg("phone_profile", 8, cam(V / "phone_in_hand_profile.mp4", slice(12, 53)),
            expect={PHONE, "looking_away"}, allow={"identity_changed"}),
        seg("profile_hidden", 8, cam(V / "phone_in_hand_profile.mp4", slice(13, 19)),
            expect={"looking_away", PHONE}),
        seg("hands_down", 5, cam(V / "phone_in_hand_profile.mp4", slice(53, 70)), allow={"looking_away"}),
        seg("empty_room", 20, cam(V / "one-by-one-person-detection.mp4", slice(0, 200)),
            expect={"face_missing"}),
    ],
    # hard negatives: ID badges on lanyards, hands near the face (ASL signing), a head turned briefly, a poster
    # with faces, the light changing
    "negatives": [
        seg("badge_A", 8, cam(V / "student.mkv"), allow={PERSON}),
        seg("badge_A2", 6, cam(ASL / "again.mkv"), allow={PERSON}),
        seg("badge_A3", 6, cam(ASL / "brother.mkv"), allow={PERSON}),
        seg("gif_brief_turns", 6, cam(V / "head-pose-face-detection-female.gif", slice(6, 23)),
            allow={"identity_changed", "looking_away"}),
        seg("badge_A4", 8, cam(V / "student.mkv"), allow={PERSON}),
        # a poster of two people on the wall behind the candidate; the light going down and up
        seg("poster", 10, postered(cam(V / "student.mkv"), IMG / "two_people.jpg"), allow={PERSON}),
        seg("lights_down", 6, lit(cam(V / "student.mkv"), 0.45), allow={PERSON}),
        seg("lights_up", 6, lit(cam(ASL / "again.mkv"), 1.4), allow={PERSON}),
        # leaning in towards the camera and back (a zoom to 1.4x and back over 8 s)
        seg("leaning", 8, leaning(cam(V / "student.mkv")), allow={PERSON}),
    ],
    # person C signing with an ID badge that YOLOv5n reads as "cell phone" at up to 0.62, facing the camera
    "badge": [
        seg("learn", 8, cam(ASL / "learn.mkv"), allow={PERSON}),
        seg("school", 8, cam(ASL / "school.mkv"), allow={PERSON}),
        seg("learn2", 6, cam(ASL / "learn.mkv"), allow={PERSON}),
    ],
    # eyes shut: no clip holds them shut for longer than a blink, so a real frame of A's blink (brother.mkv 45,
    # lids closed) is held with sensor noise, as a candidate sitting still with closed eyes; the same held with
    # the eyes open (frame 30) is not an event
    "eyes": [
        # 5 s: at 5.8 s the looped clip blinks (frame 45), which a live sample can catch just before the held
        # frame and start the event there, 0.2 s before the truth
        seg("A", 5, cam(ASL / "brother.mkv"), allow={PERSON}),
        seg("eyes_shut", 6, sensor(frozen(ASL / "brother.mkv", 45)), expect={"eyes_closed"}, allow={PERSON}),
        seg("A2", 6, cam(ASL / "brother.mkv"), allow={PERSON}),
        seg("eyes_open_still", 6, sensor(frozen(ASL / "brother.mkv", 30)), allow={PERSON}),
        seg("A3", 4, cam(ASL / "brother.mkv"), allow={PERSON}),
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


class Playback:
    """The candidate's camera and microphone for one scenario: the composed file's video and audio played ONCE
    in real time from one shared instant (no loop: at the file's end both tracks end). Media time ``m`` is handed
    to the candidate's sender at wall time ``t0 + m``; ``t0`` is the wall time of the first ``recv`` of either
    track, so the call-clock time of media 0 is ``t0 - started_at`` of the interview: the offset is known from
    the candidate's side, never fitted to the events. The transport (VP8/Opus encoding, RTP, jitter buffer,
    decoding) comes after ``t0 + m`` and so counts in the live delays."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.t0: float | None = None  # time.time() of media time 0
        self._t0_loop = 0.0  # the same instant on the event loop's clock
        self.sent = {"video": 0, "audio": 0}
        self.last = {"video": -1.0, "audio": -1.0}  # media time of the last frame handed on
        self.ended = asyncio.Event()  # the video track reached the file's end
        self.video = self.Track(self, "video")
        self.audio = self.Track(self, "audio")

    def begin(self) -> None:
        if self.t0 is None:
            self._t0_loop, self.t0 = asyncio.get_running_loop().time(), time.time()

    class Track(MediaStreamTrack):
        def __init__(self, playback: Playback, kind: str) -> None:
            super().__init__()
            self.kind = kind
            self.playback = playback
            self._frames: Iterator[Any] | None = None
            self._container: Any = None

        def _decoded(self) -> Iterator[Any]:
            """The file's frames of this kind; audio as aiortc's MediaPlayer hands it to the Opus encoder: s16
            stereo 48 kHz in 20 ms frames, pts counting samples (the encoder gives all the packets of one input
            frame one RTP timestamp: the AAC decoder's 64 ms frames left the bot's audio reader no chunk)."""
            self._container = av.open(str(self.playback.path))
            if self.kind == "video":
                yield from self._container.decode(video=0)
                return
            resampler = av.AudioResampler(format="s16", layout="stereo", rate=48000, frame_size=960)
            samples = 0
            for frame in self._container.decode(audio=0):
                for out in resampler.resample(frame):
                    out.pts, out.time_base = samples, Fraction(1, 48000)
                    samples += out.samples
                    yield out

        async def recv(self) -> Any:
            pb = self.playback
            if self.readyState != "live":
                raise MediaStreamError
            if self._frames is None:
                self._frames = self._decoded()
            pb.begin()
            frame = next(self._frames, None)  # decoded on the loop: ~2 ms a 640x480 H.264 frame
            if frame is None:
                if self.kind == "video":
                    pb.ended.set()
                self.stop()
                raise MediaStreamError
            m = float(frame.pts * frame.time_base)
            wait = pb._t0_loop + m - asyncio.get_running_loop().time()
            if wait > 0:
                await asyncio.sleep(wait)
            pb.sent[self.kind] += 1
            pb.last[self.kind] = m
            return frame

        def stop(self) -> None:
            super().stop()
            if self._container is not None:
                self._container.close()
                self._container = None


LINGER = 1.5  # s after the file's last frame was sent before the interview ends: the last frames reach the bot
# and are analysed (the scoring's slack is 1 s after a segment's end; an event starting later would be scored
# as a false alarm outside every segment)


async def run_live(name: str, timeline) -> tuple[list[Event], dict[str, Any]]:
    """Stream the composed scenario once through a real peer into the real app's in-process bot; the stored
    events back from the API, shifted from the call's clock onto the media's timeline, and the call's figures."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env()
        settings.data_dir, settings.secret_key = Path(tmp), "eval-live"
        async with served(settings, bots=True, reports=True) as srv:
            iid = await srv.interview(f"Eval {name}")
            auth = {"Authorization": f"Bearer {srv.token(iid, 'interviewer')}"}
            api = f"{srv.url}/api/interviews/{iid}"
            interviewer = Listener()
            await interviewer.connect(srv.url, srv.token(iid, "interviewer"))
            candidate = CandidatePeer(srv.url, srv.token(iid, "candidate"), timeline.path, timeline.path)
            playback = Playback(timeline.path)
            candidate.video, candidate.audio = playback.video, playback.audio  # once, not the looping tracks
            await candidate.start()
            try:
                async def started() -> bool:  # the server stamps started_at when the candidate joins
                    status, body, _ = await http("GET", api, headers=auth)
                    return status == 200 and bool(body.get("started_at"))
                assert await wait_for(started, 10), "the interview never started"
                status, body, _ = await http("POST", f"{api}/bot", headers=auth)
                assert status in (200, 202), body
                session = srv.bots.sessions[iid]
                assert await wait_for(lambda: playback.t0 is not None, 30), "no media was asked for"
                await asyncio.wait_for(playback.ended.wait(), timeline.duration + 30)
                await asyncio.sleep(LINGER)
                assert playback.t0 is not None
                offset = playback.t0 - session.origin  # call-clock time of media time 0
                video, audio = session.peer.video, session.peer.audio
                figures = {
                    "offset": offset,
                    "frames_sent": playback.sent["video"],
                    "frames_received": video.frames_received if video is not None else 0,
                    # the bot's video stamps are anchored at its first frame's arrival: how late media 0 got there
                    "anchor_lag": (video.timeline._anchor_t - offset
                                   if video is not None and video.timeline._anchor_t is not None else None),
                    "reanchors": video.timeline.reanchors if video is not None else 0,
                    "faces": session.stats.samples.get("faces", 0),
                    "objects": session.stats.samples.get("objects", 0),
                    "objects_deferred": session.pace.objects_deferred,
                    "audio_chunks": session.stats.audio_chunks,
                    "audio_discarded": audio.samples_discarded / audio.sample_rate if audio is not None else 0.0,
                    "audio_lag": (audio.timeline._anchor_t - offset
                                  if audio is not None and audio.timeline._anchor_t is not None else None),
                    "audio_reanchors": audio.timeline.reanchors if audio is not None else 0,
                    "reoffers": session.peer.reoffers,
                }
                fired = {eid: (taken, sent) for change, eid, taken, sent in session.stats.fired if change == "opened"}
                status, body, _ = await http("POST", f"{api}/end", headers=auth)
                assert status == 200, body
                status, body, _ = await http("GET", f"{api}/events", headers=auth)
                assert status == 200, body
            finally:
                await candidate.stop()
                await interviewer.sio.disconnect()
    # frame taken by the bot -> the alert on the interviewer's socket
    figures["latency"] = [got - fired[a["event"]["id"]][0] for got, a in interviewer.alerts
                          if a["change"] == "opened" and a["event"]["id"] in fired]
    events = []
    for d in body["events"]:
        e = Event.from_dict(d)
        e.start -= offset
        e.end = e.end - offset if e.end is not None else None
        events.append(e)
    return sorted(events, key=lambda e: e.start), figures


def print_table(total: dict[str, dict], label: str) -> None:
    print(f"\n{label}\n{'event type':32} {'precision':>9} {'recall':>9} {'median delay':>13}")
    for k in sorted(total):
        v = total[k]
        p = f"{v['tp'] / (v['tp'] + v['fp']):.2f} ({v['tp']}/{v['tp'] + v['fp']})" if v["tp"] + v["fp"] else "-"
        r = f"{v['found'] / v['truth']:.2f} ({v['found']}/{v['truth']})" if v["truth"] else "-"
        d = f"{statistics.median(v['delays']):.1f} s" if v["delays"] else "-"
        print(f"{k:32} {p:>9} {r:>9} {d:>13}")


def evaluate(name: str, items, timeline, events, total: dict[str, dict], head: str) -> None:
    """Score `events` (on the media's timeline) against the scenario's truth, print them, add to `total`."""
    stats, alarms = score(timeline, [a for _, a in items], events)
    print(f"## {name}: {timeline.duration:.0f} s, {len(events)} events, {head}")
    for e in events:
        print(f"   {e.type:18} {e.start:6.1f}-{(e.end or 0):6.1f} {e.detail}")
    for a in alarms:
        print(f"   FALSE ALARM {a}")
    for k, v in stats.items():
        t = total[k]
        for f in ("truth", "found", "tp", "fp"):
            t[f] += v[f]
        t["delays"] += v["delays"]


def new_total() -> dict[str, dict]:
    return defaultdict(lambda: {"truth": 0, "found": 0, "delays": [], "tp": 0, "fp": 0})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", help="scenario names")
    ap.add_argument("--live", action="store_true",
                    help="also stream each scenario once through a real peer into the in-process bot and score "
                         "the stored events (takes each scenario's length in real time)")
    args = ap.parse_args()
    cache = Path(tempfile.gettempdir()) / "proctor-eval"
    cache.mkdir(exist_ok=True)
    chosen = {name: items for name, items in SCENARIOS.items() if not args.only or name in args.only}
    timelines = {name: compose(cache / f"{name}.mp4", [s for s, _ in items])  # cheap; always fresh
                 for name, items in chosen.items()}
    live_total = new_total()
    if args.live:  # first, while nothing else of this process uses the cores
        for name, items in chosen.items():
            events, f = asyncio.run(run_live(name, timelines[name]))
            lat = f["latency"]
            lag = f"{f['anchor_lag'] * 1000:.0f} ms" if f["anchor_lag"] is not None else "-"
            evaluate(name, items, timelines[name], events, live_total,
                     f"live path: media 0 at call time {f['offset']:.2f} s (first frame reached the bot +{lag}, "
                     f"{f['reanchors']} re-anchors)")
            d = timelines[name].duration
            print(f"   frames {f['frames_sent']} sent at 15/s, {f['frames_received']} received "
                  f"({f['frames_received'] / d:.1f}/s); face samples {f['faces'] / d:.2f}/s, objects "
                  f"{f['objects'] / d:.2f}/s ({f['objects_deferred']} deferred), audio chunks "
                  f"{f['audio_chunks'] / d:.2f}/s ({f['audio_discarded']:.1f} s cut at gaps; first audio reached "
                  f"the bot +{(f['audio_lag'] or 0) * 1000:.0f} ms, {f['audio_reanchors']} re-anchors); "
                  f"re-offers {f['reoffers']}")
            if lat:
                print(f"   alert latency, frame taken -> interviewer: median {statistics.median(lat) * 1000:.0f} ms, "
                      f"max {max(lat) * 1000:.0f} ms (n={len(lat)})")
    total = new_total()
    for name, items in chosen.items():
        started = time.process_time()
        analysis = analyze_file(timelines[name].path, models=model_paths(Settings.from_env()), policy=Policy(),
                                progress=False)
        evaluate(name, items, timelines[name], analysis.events, total,
                 f"offline: {time.process_time() - started:.0f} s CPU")
    if args.live:
        print_table(live_total, "live path")
    print_table(total, "offline path (analyze_file)")


if __name__ == "__main__":
    main()
