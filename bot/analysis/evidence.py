"""JPEG evidence: the frame that made a rule fire, made small enough to send, store and print.

One place for every JPEG the project writes: the snapshot of an event (`encode_jpeg`), a smaller copy when a
snapshot is too large for a message (`shrink_jpeg`), and the report's thumbnails (`thumbnail_jpeg`).
"""
from __future__ import annotations

import cv2
import numpy as np

SNAPSHOT_WIDTH = 640
SNAPSHOT_QUALITY = 80


def encode_jpeg(image: np.ndarray, *, max_width: int = SNAPSHOT_WIDTH, quality: int = SNAPSHOT_QUALITY) -> bytes:
    """A BGR image as JPEG, at most `max_width` wide."""
    h, w = image.shape[:2]
    if w > max_width:
        image = cv2.resize(image, (max_width, round(h * max_width / w)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(jpeg: bytes, *, reduce: int = 1) -> np.ndarray | None:
    """A JPEG as BGR, decoded at 1/`reduce` scale (2, 4 or 8 decode much faster); None if not an image."""
    flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}[reduce]
    if not jpeg:
        return None
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), flag)


def shrink_jpeg(jpeg: bytes, limit: int) -> bytes | None:
    """`jpeg` if it is at most `limit` bytes, else re-encoded smaller; None if it cannot fit or is no image."""
    if len(jpeg) <= limit:
        return jpeg
    image = decode_jpeg(jpeg)
    if image is None:
        return None
    for scale, quality in ((1.0, 80), (1.0, 60), (0.5, 70), (0.25, 60)):
        resized = image if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and len(data) <= limit:
            return data.tobytes()
    return None


def thumbnail_jpeg(jpeg: bytes | None, width: int = 192, height: int = 144, quality: int = 72) -> bytes | None:
    """A `width` x `height` JPEG covering the image, centred (a report with hundreds of events stays small);
    None if `jpeg` is not an image (a corrupt snapshot must not break a report)."""
    if not jpeg:
        return None
    head = decode_jpeg(jpeg, reduce=1)
    if head is None:
        return None
    h, w = head.shape[:2]
    reduce = next((r for r in (8, 4, 2) if w // r >= width and h // r >= height), 1)
    image = head if reduce == 1 else decode_jpeg(jpeg, reduce=reduce)
    if image is None:
        return None
    h, w = image.shape[:2]
    scale = max(width / w, height / h)
    size = (max(width, round(w * scale)), max(height, round(h * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
    return encode_jpeg(image[top:top + height, left:left + width], max_width=width, quality=quality)
