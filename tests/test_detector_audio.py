"""VoiceActivity on real speech, and on silence, noise and tones that are not speech."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from bot.analysis.detectors.audio import VoiceActivity
from bot.analysis.frames import AudioChunk
from bot.analysis.policy import Policy

AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "audio"


def load(name: str, rate: int | None = None) -> tuple[np.ndarray, int]:
    with av.open(str(AUDIO / name)) as c:
        sr = rate or c.streams.audio[0].rate
        rs = av.AudioResampler(format="flt", layout="mono", rate=sr)
        parts = [r.to_ndarray().reshape(-1) for f in c.decode(audio=0) for r in rs.resample(f)]
        parts += [r.to_ndarray().reshape(-1) for r in rs.resample(None)]
    return np.concatenate(parts).astype(np.float32), sr


def chunks(x: np.ndarray, sr: int, seconds: float = 0.5) -> list[AudioChunk]:
    n = int(seconds * sr)
    return [AudioChunk(t=i / sr, samples=x[i:i + n], sample_rate=sr) for i in range(0, len(x) - n + 1, n)]


@pytest.mark.parametrize("name", ["english.wav", "french.aiff"])
@pytest.mark.parametrize("rate", [None, 16000, 48000])
def test_speech_is_speech(name, rate):
    x, sr = load(name, rate)
    vad = VoiceActivity(Policy())
    whole = vad.process(AudioChunk(t=0, samples=x, sample_rate=sr))
    assert whole.speech and whole.speech_ratio > 0.3 and whole.level_db > -30
    obs = [vad.process(c) for c in chunks(x, sr)]
    loud = [o for o in obs if o.level_db > -40]
    assert loud and sum(o.speech for o in loud) >= 0.75 * len(loud)
    # english.wav has pauses (~-60 dBFS) between phrases: not speech
    assert all(not o.speech for o in obs if o.level_db < -50)


@pytest.mark.parametrize("sr", [16000, 44100])
def test_silence_noise_and_tones_are_not_speech(sr):
    rng = np.random.default_rng(0)
    t = np.arange(2 * sr) / sr
    signals = {
        "silence": np.zeros_like(t),
        "white noise": rng.normal(0, 0.1, t.size),
        "quiet white noise": rng.normal(0, 0.01, t.size),
        "1 kHz tone": 0.1 * np.sin(2 * np.pi * 1000 * t),
        "1 kHz beeps": 0.1 * np.sin(2 * np.pi * 1000 * t) * ((t * 4) % 1 < 0.5),
        "300 Hz hum": 0.3 * np.sin(2 * np.pi * 300 * t),
        "bursts of noise": rng.normal(0, 0.1, t.size) * ((t * 4) % 1 < 0.5),
    }
    vad = VoiceActivity(Policy())
    for label, x in signals.items():
        for c in chunks(x.astype(np.float32), sr):
            o = vad.process(c)
            assert not o.speech and o.speech_ratio < 0.1, (label, o)
    assert vad.process(chunks(np.zeros(sr, np.float32), sr)[0]).level_db == -120.0


def test_speech_below_the_level_floor_is_ignored():
    x, sr = load("english.wav")
    quiet = x * 10 ** (-40 / 20)  # ~ -60 dBFS, under vad_db = -45
    o = VoiceActivity(Policy()).process(AudioChunk(t=0, samples=quiet, sample_rate=sr))
    assert not o.speech and o.level_db < -50


def test_speech_under_noise_still_found():
    x, sr = load("french.aiff")
    noisy = x + np.random.default_rng(2).normal(0, 0.003, x.size).astype(np.float32)  # ~ -50 dBFS hiss
    o = VoiceActivity(Policy()).process(AudioChunk(t=0, samples=noisy, sample_rate=sr))
    assert o.speech and o.duration == pytest.approx(len(x) / sr)
