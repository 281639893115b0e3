"""What detectors report: plain values, no I/O, no decisions.

Each detector turns one frame (or audio chunk) into one observation. Rules
(`bot.analysis.rules`) turn streams of observations into events.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Box = tuple[int, int, int, int]  # x, y, w, h in pixels of the analysed frame


@dataclass(frozen=True, slots=True)
class Face:
    box: Box
    score: float


@dataclass(frozen=True, slots=True)
class FaceObservation:
    """Faces in one frame; the largest face is taken as the candidate."""

    t: float
    count: int
    faces: tuple[Face, ...] = ()
    # Candidate's head pose in degrees (None when there is no candidate face or
    # the landmarker did not run). yaw > 0: turned to the image's left (the
    # person's right); pitch > 0: tilted up; roll > 0: the eye line rotated
    # counter-clockwise in the image. Checked on head-pose-face-detection-female.gif
    # (frames 0-5, turned to the image's left: yaw ~ +40).
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None
    # Gaze from the irises / blendshapes, in [-1, 1]; 0 is straight ahead.
    # gaze_x > 0: irises towards the image's left (same side as yaw > 0); gaze_y > 0: up.
    gaze_x: float | None = None
    gaze_y: float | None = None
    looking_away: bool = False
    eyes_closed: float | None = None  # 0 open .. 1 closed
    mouth_open: float | None = None  # 0 closed .. 1 wide open (jawOpen blendshape)
    # The candidate's 5 alignment points in frame pixels, in dlib's 5-point order: the image-right eye's
    # outer and inner corner, the image-left eye's outer and inner corner, the base of the nose (from the
    # mesh; None when the landmarker did not run). The identity check aligns the face with them.
    landmarks: tuple[tuple[float, float], ...] | None = None
    # Faces left out of ``count`` and ``faces`` because they are pictures: rigid while the candidate moves (a
    # poster, a photo on the wall behind the candidate). See ``bot.analysis.detectors.faces``.
    pictures: tuple[Face, ...] = ()


@dataclass(frozen=True, slots=True)
class IdentityObservation:
    """Is the face in the seat the enrolled candidate? (`bot.analysis.detectors.identity`)"""

    t: float
    distance: float  # face-embedding distance to the enrolled candidate, mean over the face track's recent checks
    enrolled_at: float  # when the enrolment finished
    check: float | None = None  # this check's own distance (dlib: < 0.6 is the same person)
    checks: int = 1  # how many checks `distance` averages


@dataclass(frozen=True, slots=True)
class Detection:
    label: str  # COCO name: "cell phone", "book", "laptop", "person", ...
    confidence: float
    box: Box


@dataclass(frozen=True, slots=True)
class ObjectObservation:
    t: float
    detections: tuple[Detection, ...] = ()
    frame_size: tuple[int, int] | None = None  # (w, h) of the analysed frame, for where a box sits


@dataclass(frozen=True, slots=True)
class CameraObservation:
    t: float
    brightness: float  # mean luma 0..255
    detail: float  # texture measure (e.g. Laplacian variance); ~0 for a flat frame
    blocked: bool  # covered, black or flat
    changed: float  # mean absolute difference to the previous sampled frame, 0..255
    frozen_for: float  # seconds the picture has not changed (0 while it moves)


@dataclass(frozen=True, slots=True)
class AudioObservation:
    t: float
    duration: float
    speech: bool  # voice activity in this chunk
    level_db: float  # RMS level, dBFS
    speech_ratio: float = 0.0  # share of sub-frames judged speech
    onset: float | None = None  # when the speech in this chunk began (its first speech window), if the detector knows


@dataclass(frozen=True, slots=True)
class PageObservation:
    """Reported by the candidate's page (live only)."""

    t: float
    kind: Literal["tab_hidden", "window_blur"]
    active: bool  # True when hidden/blurred starts, False when it ends


@dataclass(frozen=True, slots=True)
class TrackObservation:
    """The live bot's view of a received track (live only)."""

    t: float
    kind: Literal["video", "audio"]
    silent_for: float  # seconds with no frames received


Observation = (
    FaceObservation
    | IdentityObservation
    | ObjectObservation
    | CameraObservation
    | AudioObservation
    | PageObservation
    | TrackObservation
)
