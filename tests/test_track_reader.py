"""Track readers on real aiortc tracks: a sender and a receiver RTCPeerConnection in one process."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from fractions import Fraction

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from bot.live.readers import AudioReader, LatestFrame, Timeline
from tests.support.candidate import ENGLISH_AUDIO, STUDENT_VIDEO, LoopingTrack

pytestmark = pytest.mark.slow


def call_clock() -> Callable[[], float]:
    start = time.monotonic()
    return lambda: time.monotonic() - start


class Link:
    """A sender pc streaming `tracks` to a receiver pc; `received` holds the remote tracks."""

    def __init__(self) -> None:
        self.sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.received: dict[str, MediaStreamTrack] = {}
        self.receiver.on("track", lambda track: self.received.__setitem__(track.kind, track))

    async def connect(self, *tracks: MediaStreamTrack) -> None:
        for track in tracks:
            self.sender.addTrack(track)
        await self.sender.setLocalDescription(await self.sender.createOffer())
        await self.receiver.setRemoteDescription(self.sender.localDescription)
        await self.receiver.setLocalDescription(await self.receiver.createAnswer())
        await self.sender.setRemoteDescription(self.receiver.localDescription)
        assert set(self.received) == {t.kind for t in tracks}

    async def close(self) -> None:
        await self.sender.close()
        await self.receiver.close()


@pytest.fixture
async def link() -> AsyncIterator[Link]:
    link = Link()
    yield link
    await link.close()


def level_db(samples: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(samples.astype(np.float64) ** 2)) + 1e-12))


async def test_picked_samples_outlive_a_busy_consumer(link: Link) -> None:
    """With a sampler, the frames due at 5/s are kept while the consumer is busy (bounded, oldest pushed out),
    and a consumer that keeps up gets every one of them: 5 samples/s from a ~30 fps track."""
    from bot.analysis.sampler import Sampler

    clock = call_clock()
    reader = LatestFrame(clock)
    await link.connect(LoopingTrack(STUDENT_VIDEO, "video"))
    reader.attach(link.received["video"])
    sampler = Sampler({"faces": 5.0})
    reader.sample(sampler.due, depth=3)
    try:
        assert await reader.next(timeout=10) is not None
        await asyncio.sleep(1.5)  # busy: nothing taken for 1.5 s, ~7 samples picked
        assert reader.samples_queued == 3 and reader.samples_dropped >= 3
        kept = [reader.take_sample() for _ in range(3)]
        assert all(k is not None and k.due == {"faces"} for k in kept)
        ts = [k.t for k in kept if k is not None]
        assert ts == sorted(ts) and all(0.15 < b - a < 0.3 for a, b in zip(ts, ts[1:]))  # the oldest went first
        frame = reader.convert(kept[-1])  # type: ignore[arg-type]
        assert frame.image.shape == (480, 640, 3) and frame.t == ts[-1]
        dropped = reader.samples_dropped
        start, got = clock(), []
        while clock() - start < 2.0:  # keeping up: every picked frame is taken
            sample = reader.take_sample()
            if sample is not None:
                got.append(sample.t)
            await asyncio.sleep(0.02)
        assert reader.samples_dropped == dropped
        assert 9 <= len(got) <= 11, got  # 5/s over 2 s
        assert all(0.15 < b - a < 0.3 for a, b in zip(got, got[1:]))
    finally:
        await reader.close()


async def test_latest_frame_keeps_one_frame_for_a_slow_consumer(link: Link) -> None:
    clock = call_clock()
    source = LoopingTrack(STUDENT_VIDEO, "video")
    reader = LatestFrame(clock)
    await link.connect(source)
    track = link.received["video"]
    reader.attach(track)
    try:
        first = await reader.next(timeout=10)
        assert first is not None
        connected_at = clock()
        assert (first.width, first.height) == (640, 480)
        assert first.image.dtype == np.uint8 and first.image.shape == (480, 640, 3)
        assert first.image.std() > 20  # a real picture, not a flat frame

        received_before = reader.frames_received
        taken = [first]
        for _ in range(4):  # the consumer takes one frame per second while ~30 fps arrive
            await asyncio.sleep(1.0)
            assert reader.held == 1
            assert track._queue.qsize() <= 3  # the aiortc track queue is drained
            frame = await reader.next(after_t=taken[-1].t, timeout=2)
            assert frame is not None
            assert frame.t > taken[-1].t
            assert abs(frame.t - clock()) < 1.0  # call time, not the track's media time
            taken.append(frame)
        elapsed = clock() - connected_at
        fps = (reader.frames_received - received_before) / elapsed
        assert fps > 15, fps
        assert reader.frames_taken == 5
        assert reader.frames_dropped >= reader.frames_received - reader.frames_taken - 1
        assert reader.frames_dropped > 60
        # a second consumer asking for the same frame gets the same conversion
        assert reader.latest() is reader.latest()
        print(
            f"\nvideo: first frame {connected_at:.2f}s, {fps:.1f} fps, "
            f"handling {1e6 * reader.handle_seconds / reader.frames_received:.0f} us/frame, "
            f"bgr conversion {1e3 * reader.convert_seconds / reader.frames_taken:.2f} ms/take, "
            f"dropped {reader.frames_dropped}/{reader.frames_received}"
        )
    finally:
        await reader.close()
    assert await reader.next(timeout=1) is None  # closed: consumers are released


async def test_audio_chunks_have_fixed_length_and_speech(link: Link) -> None:
    clock = call_clock()
    reader = AudioReader(clock, chunk_seconds=0.5, sample_rate=16000)
    await link.connect(LoopingTrack(ENGLISH_AUDIO, "audio"))
    reader.attach(link.received["audio"])
    try:
        chunks = []
        for _ in range(8):
            chunk = await reader.next(timeout=5)
            assert chunk is not None
            chunks.append(chunk)
    finally:
        await reader.close()
    for chunk in chunks:
        assert chunk.sample_rate == 16000
        assert chunk.samples.dtype == np.float32 and chunk.samples.ndim == 1
        assert len(chunk.samples) == 8000 and chunk.duration == pytest.approx(0.5)
        assert np.abs(chunk.samples).max() <= 1.0
    starts = [c.t for c in chunks]
    assert all(0.49 < b - a < 0.51 for a, b in zip(starts, starts[1:])), starts
    assert abs(chunks[-1].t + 0.5 - clock()) < 1.0
    levels = [level_db(c.samples) for c in chunks]
    assert max(levels) > -30, levels  # the speaker is there (about -21 dBFS in the file)
    assert min(levels) < max(levels) - 15, levels  # speech and pauses, not a steady noise
    print(f"\naudio chunk levels dBFS: {[round(x) for x in levels]}")


async def test_audio_ring_is_bounded_and_counts_drops(link: Link) -> None:
    reader = AudioReader(call_clock(), chunk_seconds=0.25, max_chunks=3)
    await link.connect(LoopingTrack(ENGLISH_AUDIO, "audio"))
    reader.attach(link.received["audio"])
    try:
        await asyncio.sleep(3.0)  # nobody consumes
        assert reader.queued == 3
        assert reader.chunks_dropped >= 5
        assert reader.chunks_made == reader.chunks_dropped + reader.queued
        chunks = reader.take_all()
        assert [round(b.t - a.t, 3) for a, b in zip(chunks, chunks[1:])] == [0.25, 0.25]
        assert reader.queued == 0 and reader.take() is None
    finally:
        await reader.close()


async def test_a_track_stopped_by_the_sender_shows_as_silence(link: Link) -> None:
    clock = call_clock()
    video_source = LoopingTrack(STUDENT_VIDEO, "video")
    video, audio = LatestFrame(clock), AudioReader(clock)
    await link.connect(video_source, LoopingTrack(ENGLISH_AUDIO, "audio"))
    video.attach(link.received["video"])
    audio.attach(link.received["audio"])
    try:
        assert await video.next(timeout=10) is not None
        assert await audio.next(timeout=10) is not None
        assert video.silent_for() < 0.5
        video_source.stop()
        await asyncio.sleep(1.0)
        first = video.observation()
        await asyncio.sleep(1.5)
        second = video.observation()
        assert (first.kind, second.kind) == ("video", "video")
        assert second.silent_for > first.silent_for + 1.3
        assert second.silent_for > 2.0
        assert audio.silent_for() < 0.5  # the other track still flows
        assert audio.observation().kind == "audio"
    finally:
        await video.close()
        await audio.close()


async def test_a_new_track_after_a_reconnect_keeps_call_time() -> None:
    clock = call_clock()
    reader = LatestFrame(clock)
    first_link, second_link = Link(), Link()
    try:
        await first_link.connect(LoopingTrack(STUDENT_VIDEO, "video"))
        reader.attach(first_link.received["video"])
        before = await reader.next(timeout=10)
        assert before is not None
        await asyncio.sleep(1.0)
        await first_link.close()  # the candidate leaves ...
        await asyncio.sleep(1.0)
        assert reader.silent_for() > 0.8
        await second_link.connect(LoopingTrack(STUDENT_VIDEO, "video"))  # ... and comes back
        reader.attach(second_link.received["video"])
        after = await reader.next(after_t=reader.latest_t, timeout=10)
        assert after is not None
        assert reader.tracks_attached == 2
        assert after.t > before.t + 1.5  # the new track's pts restart at 0; call time does not
        assert abs(after.t - clock()) < 1.0
        later = await reader.next(after_t=after.t, timeout=5)
        assert later is not None and later.t > after.t
    finally:
        await reader.close()
        await first_link.close()
        await second_link.close()


def test_timeline_rebases_restarts_and_jumps() -> None:
    now = [10.0]
    timeline = Timeline(lambda: now[0], max_skew=1.0)
    tb = Fraction(1, 90000)
    assert timeline.stamp(5_000_000, tb) == 10.0  # anchored at the clock
    now[0] = 10.5
    assert timeline.stamp(5_000_000 + 45000, tb) == pytest.approx(10.5)
    now[0] = 10.52  # jitter: media time is kept, not arrival time
    assert timeline.stamp(5_000_000 + 45000 + 3000, tb) == pytest.approx(10.5 + 3000 / 90000)
    now[0] = 11.0  # an RTP jump of hours (aiortc's wrap handling after a looped sender)
    assert timeline.stamp(5_000_000 + 2**32, tb) == 11.0
    assert timeline.reanchors == 1
    now[0] = 12.0  # a new track whose pts restart
    timeline.restart()
    assert timeline.stamp(0, tb) == 12.0
    now[0] = 12.1  # media time going backwards never moves call time back
    assert timeline.stamp(-0.5 * 90000, tb) == pytest.approx(12.0)
    assert timeline.stamp(None, None) == pytest.approx(12.1)
