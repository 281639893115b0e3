"""The file source and the sampler, on the real media."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bot.analysis.frames import AudioChunk
from bot.analysis.policy import Policy
from bot.analysis.recording import MediaError, iter_audio, iter_video, probe, sample_file
from bot.analysis.sampler import Sampler
from tests.support.paths import MEDIA


@pytest.mark.parametrize("name, width, height, frames", [
    ("video/student.mkv", 640, 480, 52),
    ("video/head-pose-face-detection-female.gif", 480, 270, 23),
    ("video/one-by-one-person-detection.mp4", 768, 432, 1394),
])
def test_reads_every_container(name, width, height, frames):
    info = probe(MEDIA / name)
    assert (info.width, info.height) == (width, height)
    decoded = list(iter_video(MEDIA / name))
    assert len(decoded) == frames
    ts = [f.t for f in decoded]
    assert ts[0] == 0.0 and all(b > a for a, b in zip(ts, ts[1:]))
    assert decoded[0].image().shape == (height, width, 3)


def test_sampler_keeps_each_detector_on_its_own_rate():
    sampler = Sampler({"faces": 5.0, "objects": 1.0})
    counts = {"faces": 0, "objects": 0}
    for i in range(300):  # 10 s at 30 fps
        for name in sampler.due(i / 30):
            counts[name] += 1
    assert counts == {"faces": 50, "objects": 10}


def test_sampler_never_asks_more_than_the_source_gives():
    sampler = Sampler({"faces": 5.0})
    assert sum(bool(sampler.due(i / 2)) for i in range(20)) == 20  # 2 fps source: every frame


def test_sampled_file_is_not_every_frame_and_stays_ordered():
    policy = Policy()
    decoded = []
    items = list(sample_file(MEDIA / "video/one-by-one-person-detection.mp4", policy.sampling,
                             on_frame=decoded.append))
    assert len(decoded) == 1394
    faces = [i for i in items if "faces" in i.due]
    objects = [i for i in items if "objects" in i.due]
    assert len(faces) == pytest.approx(139.4 * 5, abs=2)
    assert len(objects) == pytest.approx(139.4, abs=2)
    assert len(items) < len(decoded)


def test_audio_chunks_are_16k_mono_and_merged_after_their_span():
    chunks = list(iter_audio(MEDIA / "audio/english.wav", 0.5))
    assert all(c.sample_rate == 16000 and c.samples.dtype == np.float32 for c in chunks)
    assert [len(c.samples) for c in chunks[:-1]] == [8000] * (len(chunks) - 1)
    assert sum(c.duration for c in chunks) == pytest.approx(2.74, abs=0.05)
    assert float(np.abs(np.concatenate([c.samples for c in chunks])).max()) > 0.1  # real speech
    items = list(sample_file(MEDIA / "video/student.mkv", Policy().sampling,
                             audio=MEDIA / "audio/french.aiff"))
    ready = [i.t + i.duration if isinstance(i, AudioChunk) else i.t for i in items]
    assert ready == sorted(ready)
    assert any(isinstance(i, AudioChunk) for i in items)


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.mp4", "no such file"),
    (lambda d: d, "not a file"),
    (lambda d: _write(d / "garbage.mp4", b"\x00\x01garbage" * 100), "not a readable"),
    (lambda d: _write(d / "text.mkv", b"just some text\n" * 50), "not a"),
])
def test_bad_files_give_one_clear_line(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(MediaError) as err:
        list(sample_file(path, Policy().sampling))
    text = str(err.value)
    assert message in text and "\n" not in text and str(path) in text


def test_truncated_video_is_an_error_not_a_crash(tmp_path):
    data = (MEDIA / "video/student.mkv").read_bytes()
    broken = _write(tmp_path / "broken.mkv", data[: len(data) // 3])
    frames = list(iter_video(broken))  # FFmpeg decodes what is there
    assert 0 < len(frames) < 52


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_sampler_makes_up_a_sample_whose_frame_was_lost():
    """8 frames/s (what the bot asks for a 5/s face rate) with every 13th frame lost: still 5 samples/s."""
    sampler = Sampler({"faces": 5.0})
    frames = [i / 8 for i in range(8 * 60) if i % 13 != 5]
    picked = [t for t in frames if sampler.due(t)]
    assert len(picked) == 300  # 60 s
    gaps = [b - a for a, b in zip(picked, picked[1:])]
    assert min(gaps) >= 0.125 - 1e-9 and max(gaps) <= 0.5  # never closer than the source, never a long hole


def test_sampler_restarts_its_grid_after_a_pause():
    sampler = Sampler({"faces": 5.0})
    before = sum(bool(sampler.due(i / 10)) for i in range(10))  # 1 s at 10 fps
    after = [t for t in (5.0 + i / 10 for i in range(10)) if sampler.due(t)]  # 4 s later
    assert before == 5 and len(after) == 5  # no burst to make up the pause
