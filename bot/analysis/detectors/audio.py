"""Voice activity without a model: energy plus spectral shape, per 25 ms sub-frame.

The chunk is analysed at its own sample rate (no resampling is needed: every test is done on
frequency bands of an FFT, so 8, 16, 44.1 or 48 kHz all work). Each 25 ms sub-frame
(Hann window) is judged speech when all of these hold:

* level: its RMS is above ``policy.detection.vad_db`` (dBFS);
* voice band: at least ``VOICE_BAND_MIN`` of its energy between 50 Hz and 8 kHz lies in
  80-4000 Hz (rejects rumble, hiss). Not 300-3400 Hz: measured on english.wav / french.aiff,
  most voiced energy is the fundamental and first harmonics, below 300 Hz;
* not noise-like: the spectral flatness (geometric / arithmetic mean of the power in the voice band)
  is below ``FLATNESS_MAX`` (white or pink noise is flat, voiced speech has harmonics);
* not a tone: 90 % of its energy needs at least ``TONE_MAX_BINS + 1`` FFT bins (40 Hz each); a
  whistle or a 1 kHz test tone fits in 2-3 bins, a voiced sub-frame needs ~6-9 (median).

``speech_ratio`` is the share of sub-frames judged speech; the chunk is speech when it is at least
``SPEECH_RATIO_MIN`` and the loud sub-frames are not steady (speech rises and falls with syllables:
the level of the loud sub-frames must vary by at least ``MODULATION_MIN_DB`` standard deviation),
which rejects steady machine noise that happens to pass the spectral tests.
"""
from __future__ import annotations

import numpy as np

from bot.analysis.frames import AudioChunk
from bot.analysis.observations import AudioObservation
from bot.analysis.policy import Policy

SUBFRAME_S = 0.025
VOICE_BAND = (80.0, 4000.0)
ANALYSIS_BAND = (50.0, 8000.0)
VOICE_BAND_MIN = 0.7
FLATNESS_MAX = 0.35
TONE_MAX_BINS = 3
SPEECH_RATIO_MIN = 0.2
MODULATION_MIN_DB = 2.0
_EPS = 1e-12


def level_db(x: np.ndarray) -> float:
    """RMS level in dBFS (-120 for digital silence)."""
    if x.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return max(-120.0, 20.0 * np.log10(rms + _EPS))


class VoiceActivity:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._cache: dict[int, tuple[int, np.ndarray, np.ndarray, np.ndarray]] = {}

    def close(self) -> None:
        self._cache.clear()

    def _bands(self, sr: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """Sub-frame length, Hann window, and the FFT-bin masks for the analysis / voice bands."""
        got = self._cache.get(sr)
        if got is None:
            n = max(32, int(round(SUBFRAME_S * sr)))
            freqs = np.fft.rfftfreq(n, 1.0 / sr)
            hi = min(ANALYSIS_BAND[1], sr / 2)
            analysis = (freqs >= ANALYSIS_BAND[0]) & (freqs <= hi)
            voice = (freqs >= VOICE_BAND[0]) & (freqs <= min(VOICE_BAND[1], sr / 2))
            got = (n, np.hanning(n).astype(np.float32), analysis, voice)
            self._cache[sr] = got
        return got

    def frame_features(self, samples: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """Per sub-frame: level_db, voice_share, flatness, bins90, speech (bool)."""
        n, window, analysis, voice = self._bands(int(sample_rate))
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        count = len(x) // n
        if count == 0:
            empty = np.zeros(0)
            return {"level_db": empty, "voice_share": empty, "flatness": empty, "bins90": empty,
                    "speech": np.zeros(0, bool)}
        frames = x[: count * n].reshape(count, n)
        rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
        levels = np.maximum(-120.0, 20 * np.log10(rms + _EPS))
        power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2 + _EPS
        pv = power[:, voice]
        voice_share = pv.sum(axis=1) / power[:, analysis].sum(axis=1)
        flatness = np.exp(np.mean(np.log(pv), axis=1)) / np.mean(pv, axis=1)
        pa = np.sort(power[:, analysis], axis=1)[:, ::-1]
        cum = np.cumsum(pa, axis=1) / pa.sum(axis=1, keepdims=True)
        bins90 = (cum < 0.9).sum(axis=1) + 1
        speech = (
            (levels > self.policy.detection.vad_db)
            & (voice_share >= VOICE_BAND_MIN)
            & (flatness < FLATNESS_MAX)
            & (bins90 > TONE_MAX_BINS)
        )
        return {"level_db": levels, "voice_share": voice_share, "flatness": flatness,
                "bins90": bins90, "speech": speech}

    def process(self, chunk: AudioChunk) -> AudioObservation:
        f = self.frame_features(chunk.samples, chunk.sample_rate)
        total = len(f["speech"])
        ratio = float(f["speech"].sum()) / total if total else 0.0
        loud = f["level_db"][f["level_db"] > self.policy.detection.vad_db]
        modulated = loud.size >= 2 and float(loud.std()) >= MODULATION_MIN_DB
        return AudioObservation(
            t=chunk.t,
            duration=chunk.duration,
            speech=bool(ratio >= SPEECH_RATIO_MIN and modulated),
            level_db=round(level_db(np.asarray(chunk.samples)), 2),
            speech_ratio=round(ratio, 3),
        )
