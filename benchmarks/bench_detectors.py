"""Milliseconds per frame for each detector on real frames, after a warm-up.

    python benchmarks/bench_detectors.py [--frames N] [--warmup N]

Frames: student.mkv (640x480) and the two head-pose GIFs (480x270, also letterboxed to 640x480
so every detector sees the 640x480 size used by the live bot). Audio: french.aiff (speech nearly throughout)
in 0.5 s chunks: Silero at 16 kHz (what the readers deliver) and 44.1 kHz (resampled), the spectral stand-in.
Models come from PROCTOR_MODELS_DIR, else ../shared/models beside the repository.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bot.analysis.detectors.audio import SpectralVoiceActivity, VoiceActivity  # noqa: E402
from bot.analysis.detectors.camera import CameraHealth  # noqa: E402
from bot.analysis.detectors.faces import FaceDetector  # noqa: E402
from bot.analysis.detectors.objects import ObjectDetector  # noqa: E402
from bot.analysis.frames import AudioChunk, VideoFrame  # noqa: E402
from bot.analysis.policy import Policy  # noqa: E402

SHARED = REPO.parent / "shared"
MEDIA = SHARED / "media"


def video_frames(name: str, size: tuple[int, int] | None = (640, 480)) -> list[np.ndarray]:
    out = []
    with av.open(str(MEDIA / "video" / name)) as c:
        for f in c.decode(video=0):
            img = f.to_ndarray(format="bgr24")
            if size and (img.shape[1], img.shape[0]) != size:
                w, h = size
                r = min(w / img.shape[1], h / img.shape[0])
                img = cv2.resize(img, (round(img.shape[1] * r), round(img.shape[0] * r)))
                top, left = (h - img.shape[0]) // 2, (w - img.shape[1]) // 2
                img = cv2.copyMakeBorder(img, top, h - img.shape[0] - top, left, w - img.shape[1] - left,
                                         cv2.BORDER_CONSTANT)
            out.append(img)
    return out


def audio_chunks(name: str, seconds: float = 0.5, rate: int | None = None) -> list[AudioChunk]:
    with av.open(str(MEDIA / "audio" / name)) as c:
        sr = rate or c.streams.audio[0].rate
        rs = av.AudioResampler(format="flt", layout="mono", rate=sr)
        x = np.concatenate([r.to_ndarray().reshape(-1) for f in c.decode(audio=0) for r in rs.resample(f)])
    n = int(seconds * sr)
    return [AudioChunk(i / sr, x[i:i + n].astype(np.float32), sr) for i in range(0, len(x) - n + 1, n)]


def bench(label: str, fn, items: list, n: int, warmup: int) -> None:
    for i in range(warmup):
        fn(items[i % len(items)])
    times = []
    for i in range(n):
        item = items[i % len(items)]
        t0 = time.perf_counter()
        fn(item)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    p = lambda q: times[min(len(times) - 1, int(round(q * (len(times) - 1))))]
    print(f"{label:<44} n={n:<4} mean {statistics.fmean(times):7.2f}  p50 {p(0.5):7.2f}  p95 {p(0.95):7.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60, help="timed calls per case (default 60)")
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    models = Path(os.environ.get("PROCTOR_MODELS_DIR") or SHARED / "models")
    policy = Policy()

    student = [VideoFrame(i / 30, im) for i, im in enumerate(video_frames("student.mkv"))]
    gif1 = [VideoFrame(i / 12.5, im) for i, im in enumerate(video_frames("head-pose-face-detection-female.gif"))]
    gif2 = [VideoFrame(i / 12.5, im) for i, im in
            enumerate(video_frames("head-pose-face-detection-female-and-male.gif"))]
    gif2_native = [VideoFrame(i / 12.5, im) for i, im in
                   enumerate(video_frames("head-pose-face-detection-female-and-male.gif", None))]
    print(f"cores: {os.cpu_count()}, opencv {cv2.__version__}, frames 640x480 unless noted")

    from adapters.models import model_paths
    from bot.settings import Settings

    derived = model_paths(Settings(models_dir=models))  # YuNet with a free input size, YOLO cut at its heads
    faces = FaceDetector(policy, derived.yunet, derived.face_landmarker)
    try:
        # identity: one embedding per check (the aligned chip, dlib's ResNet on it and on its mirror image, the
        # mean): dlib itself, and its network as ONNX on onnxruntime (what the app runs,
        # adapters.derived.dlib_resnet); and the chip alone on onnxruntime, for comparison
        from adapters.models import resolve_packaged
        from bot.analysis.detectors.identity import IdentityDetector, usable

        seen = [(f.image, o.landmarks) for f in student[:20] for o in [faces.process(f)] if usable(o)]
        for label, path, mirror in (("dlib", resolve_packaged("face_recognition"), True),
                                    ("onnx", derived.face_recognition, True),
                                    ("onnx, the chip alone", derived.face_recognition, False)):
            ident = IdentityDetector(policy, path, mirror=mirror)
            embed = ident.embed
            chip = ident.chip
            bench(f"identity student.mkv (1 embedding, {label})", lambda x, embed=embed, chip=chip: embed(chip(*x)),
                  seen, max(10, args.frames // 3), 2)
            ident.close()
        bench("faces  student.mkv (1 face)", faces.process, student, args.frames, args.warmup)
        bench("faces  female.gif (1 face)", faces.process, gif1, args.frames, args.warmup)
        bench("faces  female-and-male.gif (2 faces)", faces.process, gif2, args.frames, args.warmup)
        bench("faces  female-and-male.gif 480x270 (2 faces)", faces.process, gif2_native, args.frames, args.warmup)
    finally:
        faces.close()

    # the whole export pads a 640x480 frame to 640x640; the app runs it cut at its heads, unpadded
    from adapters.derived import yolo_heads
    from adapters.models import sha256_of

    whole = models / "yolov5n.onnx"
    with tempfile.TemporaryDirectory() as cache:
        heads = yolo_heads(whole, Path(cache), source_sha256=sha256_of(whole))
        for label, path in (("whole, 640x640", whole), ("heads, 640x480", heads)):
            for threads in (1, 2):
                objects = ObjectDetector(policy, path, threads=threads)
                bench(f"objects student.mkv (v5n {label}, {threads}t)",
                      objects.process, student, args.frames, args.warmup)
                objects.close()

    camera = CameraHealth(policy)
    bench("camera student.mkv", camera.process, student, args.frames * 5, args.warmup)
    bench("camera female-and-male.gif", camera.process, gif2, args.frames * 5, args.warmup)

    from adapters.models import resolve_packaged

    # the readers hand the detector 16 kHz chunks; 44.1 kHz goes through its resampler
    vad = VoiceActivity(policy, resolve_packaged("silero_vad"))
    for rate in (16000, 44100):
        bench(f"audio  Silero, french.aiff 0.5 s @{rate / 1000:g} kHz", vad.process,
              audio_chunks("french.aiff", rate=rate), args.frames * 5, args.warmup)
    spectral = SpectralVoiceActivity(policy)
    bench("audio  spectral, french.aiff 0.5 s @16 kHz", spectral.process, audio_chunks("french.aiff", rate=16000),
          args.frames * 5, args.warmup)


if __name__ == "__main__":
    main()
