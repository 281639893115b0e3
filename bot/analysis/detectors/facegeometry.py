"""The head's pose from a face mesh: MediaPipe's face geometry pipeline (the facial transformation matrix of its
Face Landmarker), in numpy.

The same steps as MediaPipe's ``face_geometry/libs/geometry_pipeline.cc`` and ``procrustes_solver.cc`` with the
environment its Face Landmarker uses (origin at the top-left corner, a perspective camera of 63 degrees vertical
field of view, near plane 1): the screen landmarks are put into a metric space (two scale estimates), then a
weighted orthogonal Procrustes fit maps the canonical face onto them. The canonical face and the fit's weights are
read from the model bundle (``geometry_pipeline_metadata_landmarks.binarypb``, a ``GeometryPipelineMetadata``
protobuf, parsed here from its wire format). Only the 468 mesh points are used (not the irises), and only the 33
points with a weight enter the fit. Matches MediaPipe's matrices within float32 rounding (yaw and pitch within
1e-4 degrees on real frames; tests/test_facemesh.py). ~0.3 ms a face.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Iterator

import numpy as np

FOV_DEGREES = 63.0  # vertical field of view of the Face Landmarker's virtual camera
NEAR = 1.0  # its near plane (cm)
_FACE_LANDMARK_PIPELINE = 1  # GeometryPipelineMetadata.input_source this port implements
_VERTEX_PT = 0  # Mesh3d.vertex_type: x, y, z, u, v per vertex


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated protobuf varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: ints for varints, bytes otherwise."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated protobuf message")
        yield field, value


def load_metadata(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The canonical face (N x 3) and each point's Procrustes weight (N) from a ``GeometryPipelineMetadata``."""
    vertices: list[float] = []
    basis: list[tuple[int, float]] = []
    vertex_type, source = _VERTEX_PT, _FACE_LANDMARK_PIPELINE
    for field, value in _fields(data):
        if field == 1 and isinstance(value, bytes):  # canonical_mesh: Mesh3d
            for f, v in _fields(value):
                if f == 1 and isinstance(v, int):
                    vertex_type = v
                elif f == 3 and isinstance(v, bytes):  # vertex_buffer: repeated float, packed or not
                    vertices.extend(np.frombuffer(v, "<f4").tolist())
        elif field == 2 and isinstance(value, bytes):  # procrustes_landmark_basis: WeightedLandmarkRef
            ref, weight = 0, 0.0
            for f, v in _fields(value):
                if f == 1 and isinstance(v, int):
                    ref = v
                elif f == 2 and isinstance(v, bytes):
                    weight = struct.unpack("<f", v)[0]
            basis.append((ref, weight))
        elif field == 3 and isinstance(value, int):
            source = value
    if vertex_type != _VERTEX_PT or source != _FACE_LANDMARK_PIPELINE or not vertices or not basis:
        raise ValueError("not the face landmark pipeline's geometry metadata")
    canonical = np.asarray(vertices, np.float64).reshape(-1, 5)[:, :3]
    weights = np.zeros(len(canonical))
    for ref, weight in basis:
        weights[ref] = weight
    return canonical, weights


class FaceGeometry:
    """``matrix(landmarks, width, height)``: the 4x4 pose of the face whose normalised landmarks (x, y in 0..1 of a
    width x height image, z as the landmark model gives it) are given, as MediaPipe's
    ``facial_transformation_matrixes``; None for a mesh MediaPipe skips (all points within 0.001 of each other)."""

    def __init__(self, canonical: np.ndarray, weights: np.ndarray) -> None:
        self.n = len(canonical)
        self._idx = np.flatnonzero(weights > 0)  # a weightless point adds nothing to the fit
        self._w = weights[self._idx]
        self._w_sum = float(self._w.sum())
        self._src = canonical[self._idx].T  # 3 x K
        centre = (self._src * self._w).sum(axis=1) / self._w_sum
        self._centred = self._src - centre[:, None]
        self._centred_w = self._centred * self._w
        self._den = float((self._centred * self._src * self._w).sum())
        f32 = np.float32  # the frustum as MediaPipe computes it, in float32
        self._h_near = float(f32(2.0) * f32(NEAR) * np.tan(f32(0.5) * (f32(math.pi) / f32(180.0)) * f32(FOV_DEGREES)))

    def _procrustes(self, target: np.ndarray) -> np.ndarray:
        """The scaled rotation and translation mapping the canonical points onto ``target`` (3 x K), weighted."""
        u, _, vt = np.linalg.svd(target @ self._centred_w.T)
        if np.linalg.det(u) * np.linalg.det(vt) < 0:
            u[:, 2] *= -1.0
        rot = u @ vt
        scale = float(((rot @ self._centred) * target * self._w).sum()) / self._den
        if scale <= 1e-9:
            raise ValueError("face geometry: degenerate mesh")
        m = np.eye(4)
        m[:3, :3] = scale * rot
        m[:3, 3] = ((target - m[:3, :3] @ self._src) * self._w).sum(axis=1) / self._w_sum
        return m

    def _scale(self, target: np.ndarray) -> float:
        return float(np.linalg.norm(self._procrustes(target)[:3, 0]))

    def matrix(self, landmarks: np.ndarray, width: int, height: int) -> np.ndarray | None:
        lm = np.asarray(landmarks[: self.n, :3], np.float64)
        d = lm[:, :2] - lm[:, :2].mean(axis=0)
        if math.sqrt(float((d * d).sum(axis=1).max())) <= 1e-3:
            return None
        h_near = self._h_near
        w_near = float(np.float32(width) * np.float32(h_near) / np.float32(height))
        sub = lm[self._idx]
        x = sub[:, 0] * w_near - 0.5 * w_near  # ProjectXY, origin at the top-left corner
        y = (1.0 - sub[:, 1]) * h_near - 0.5 * h_near
        z = sub[:, 2] * w_near
        depth_offset = float(lm[:, 2].mean() * w_near)
        first = self._scale(np.stack([x, y, -z]))  # XY not unprojected yet: Z is relative
        zi = (z - depth_offset + NEAR) / first
        second = self._scale(np.stack([x * zi / NEAR, y * zi / NEAR, -zi]))
        zm = (z - depth_offset + NEAR) / (first * second)
        return self._procrustes(np.stack([x * zm / NEAR, y * zm / NEAR, -zm]))
