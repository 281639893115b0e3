"""What the conferencing tests plug into an adapter's ``on_track``: it reads every track it gets.

aiortc queues every decoded frame of a remote track without limit until someone reads it, so a
test must drain each track, as the bot's readers do. `TrackSink` runs one task per track, counts
the decoded frames of each, and keeps the newest video frame to look at. `until()` waits for a
condition (polling it), never for a fixed time.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack


class TrackSink:
    """Drains the tracks an adapter hands over; ``frames[i]`` counts the frames of ``tracks[i]``."""

    def __init__(self) -> None:
        self.tracks: list[MediaStreamTrack] = []
        self.frames: list[int] = []
        self.ended: list[bool] = []
        self.last_video: av.VideoFrame | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def on_track(self, track: MediaStreamTrack) -> None:
        self.tracks.append(track)
        self.frames.append(0)
        self.ended.append(False)
        task = asyncio.create_task(self._drain(len(self.tracks) - 1, track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, index: int, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                self.frames[index] += 1
                if isinstance(frame, av.VideoFrame):
                    self.last_video = frame
        except MediaStreamError:
            self.ended[index] = True

    def count(self, kind: str, since_track: int = 0) -> int:
        """Frames received on the ``kind`` tracks from track number ``since_track`` on."""
        return sum(n for track, n in zip(self.tracks[since_track:], self.frames[since_track:]) if track.kind == kind)

    def kinds(self, since_track: int = 0) -> list[str]:
        return sorted(track.kind for track in self.tracks[since_track:])

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> float:
    """Wait until ``predicate()`` holds; the seconds it took. AssertionError naming ``what`` on timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start
