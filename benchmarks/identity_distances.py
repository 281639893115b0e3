"""Face-embedding distances between the people of the shared media (dlib ResNet, mesh-aligned chips).

Prints, per clip, how many faces were usable, the within-clip spread, the distances between clips
(same person / different person), under lighting changes, and with every clip sent through VP8 at
``VP8_BITRATE`` as a live call's candidate does (gallery and probes both, as the live bot sees them). Run:

    PROCTOR_MODELS_DIR=../shared/models .venv/bin/python benchmarks/identity_distances.py [--single] [out.npz]

``--single``: one descriptor per face, of the chip alone (without its mirror image, ``IdentityDetector(mirror=)``),
to compare with the detector's default.
"""
from __future__ import annotations

import itertools
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.models import model_paths
from bot.analysis.detectors.faces import FaceDetector
from bot.analysis.detectors.identity import IdentityDetector, usable
from bot.analysis.frames import VideoFrame
from bot.analysis.policy import Policy
from bot.settings import Settings
from tests.support.paths import MEDIA
from tests.support.scenario import read_clip

PEOPLE = {  # MANIFEST.md of shared/media
    "A": ["asl/again", "asl/brother", "student"],
    "B": ["asl/bird", "asl/milk", "thanks"],
    "C": ["asl/learn", "asl/school"],
    "D": ["asl/eat", "asl/night"],
    "E": ["asl/hungry", "asl/want"],
}


def lighting(image: np.ndarray, kind: str) -> np.ndarray:
    if kind == "dark":
        return np.clip(image.astype(np.float32) * 0.45, 0, 255).astype(np.uint8)
    if kind == "bright":
        return np.clip(image.astype(np.float32) * 1.4 + 20, 0, 255).astype(np.uint8)
    if kind == "noise":  # a live camera's sensor noise, +-2 levels (what eval_detection's clips carry)
        rng = np.random.default_rng(int(image[0, 0, 0]))
        jitter = rng.integers(-2, 3, size=image.shape, dtype=np.int16)
        return np.clip(image.astype(np.int16) + jitter, 0, 255).astype(np.uint8)
    if kind == "warm":
        out = image.astype(np.float32) * np.array([0.7, 0.95, 1.25], np.float32)  # BGR: warm lamp
        return np.clip(out, 0, 255).astype(np.uint8)
    return image


VP8_BITRATE = 500_000  # what aiortc's encoder starts a call at (the live evaluation's candidate)


def vp8(images: list[np.ndarray], fps: int = 15) -> list[np.ndarray]:
    """The frames after a VP8 round trip at ``VP8_BITRATE`` (libvpx, real-time, as a call's stream)."""
    h, w = images[0].shape[:2]
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt, enc.bit_rate = w, h, "yuv420p", VP8_BITRATE
    enc.framerate = fps
    enc.time_base = Fraction(1, fps)
    enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    dec = av.CodecContext.create("libvpx", "r")
    out = []
    for i, img in enumerate([*images, None]):
        frame = None
        if img is not None:
            frame = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")
            frame.pts = i
        for packet in enc.encode(frame):
            out.extend(f.to_ndarray(format="bgr24") for f in dec.decode(packet))
    return out


def windows(checks: list[float], k: int) -> list[float]:
    """The mean of every k checks in a row: what the detector reports on one face track."""
    return [float(np.mean(checks[i:i + k])) for i in range(len(checks) - k + 1)]


def equal_error(same: np.ndarray, other: np.ndarray) -> str:
    """Where the share of the same person's distances over a threshold meets another person's at or under it."""
    _, t = min((abs(np.mean(same > t) - np.mean(other <= t)), t) for t in np.arange(0.35, 0.6, 0.001))
    return f"{np.mean(same > t):.4f} at {t:.3f}"


def main() -> None:
    args = sys.argv[1:]
    single = "--single" in args
    out_path = next((a for a in args if not a.startswith("--")), None)
    s = Settings.from_env()
    policy = Policy()
    threshold = policy.rules["identity_changed"].threshold
    models = model_paths(s)
    faces = FaceDetector(policy, models.yunet, models.face_landmarker)
    ident = IdentityDetector(policy, models.face_recognition, mirror=not single)
    print(f"descriptor: {'the chip alone' if single else 'the mean of the chip and its mirror image'}; "
          f"threshold {threshold}")
    embs: dict[str, np.ndarray] = {}
    cost: list[float] = []
    light: dict[str, dict[str, np.ndarray]] = {}
    for person, clips in PEOPLE.items():
        for name in clips:
            clip = read_clip(MEDIA / "video" / f"{name}.mkv")
            images = clip[::3]
            sent = vp8(clip)[::3]
            out = []
            for kind in ("", "dark", "bright", "warm", "noise", "vp8"):
                vecs = []
                for i, img in enumerate(sent if kind == "vp8" else images):
                    img = lighting(img, kind)
                    obs = faces.process(VideoFrame(i / 10, img))
                    if not usable(obs):
                        continue
                    t0 = time.thread_time()
                    vecs.append(ident.embed(ident.chip(img, obs.landmarks)))
                    cost.append((time.thread_time() - t0) * 1000)
                if kind == "":
                    embs[name] = np.array(vecs)
                    out.append(f"{len(vecs)}/{len(images)} usable")
                else:
                    light.setdefault(name, {})[kind] = np.array(vecs)
            e = embs[name]
            spread = max((np.linalg.norm(a - b) for a, b in itertools.combinations(e, 2)), default=0.0)
            print(f"{person} {name:12} {out[0]}, max distance within the clip {spread:.3f}")
    owner = {c: p for p, cs in PEOPLE.items() for c in cs}

    def dist(a: np.ndarray, b: np.ndarray) -> float:  # as the detector: gallery = a's first 5 faces, median
        return float(np.median(per_face(a, b)))

    def per_face(a: np.ndarray, b: np.ndarray, how: str = "min") -> list[float]:
        """One check per face of b against a's first 5 faces: the nearest ("min", the detector's), the mean
        distance to the five ("mean"), or the distance to their centroid ("centroid")."""
        gallery = a[:5]
        if how == "centroid":
            c = gallery.mean(axis=0)
            return [float(np.linalg.norm(x - c)) for x in b]
        agg = min if how == "min" else (lambda v: float(np.mean(list(v))))
        return [float(agg(np.linalg.norm(x - g) for g in gallery)) for x in b]

    if out_path:
        np.savez(out_path, **{k.replace("/", "_"): v for k, v in embs.items()})

    same, diff = [], []
    print("\nclip pairs: median over the second clip's faces of the distance to the first clip's nearest face")
    for a, b in itertools.permutations(embs, 2):
        if not len(embs[a]) or not len(embs[b]):
            continue
        d = dist(embs[a], embs[b])
        (same if owner[a] == owner[b] else diff).append((d, a, b))
    for d, a, b in sorted(same):
        print(f"  same person {owner[a]}: {a:12} -> {b:12} {d:.3f}")
    print(f"same person: max {max(same)[0]:.3f}; different people: min {min(diff)[0]:.3f} "
          f"({min(diff)[1]} -> {min(diff)[2]}), median {np.median([d for d, _, _ in diff]):.3f}")
    same_f = [d for a, b in itertools.permutations(embs, 2) if owner[a] == owner[b] and len(embs[a])
              for d in per_face(embs[a], embs[b])]
    diff_f = [d for a, b in itertools.permutations(embs, 2) if owner[a] != owner[b] and len(embs[a])
              for d in per_face(embs[a], embs[b])]
    print("per face (one check), gallery = first clip's first 5 faces:")
    print(f"  same person  n={len(same_f)} p50 {np.median(same_f):.3f} p95 {np.percentile(same_f, 95):.3f} "
          f"p99 {np.percentile(same_f, 99):.3f} max {max(same_f):.3f}")
    print(f"  other person n={len(diff_f)} p1 {np.percentile(diff_f, 1):.3f} p5 {np.percentile(diff_f, 5):.3f} "
          f"p50 {np.median(diff_f):.3f} min {min(diff_f):.3f}")
    for thr in sorted({threshold, 0.45, 0.5, 0.55, 0.6}):
        print(f"  threshold {thr}: same person above {np.mean(np.array(same_f) > thr):.3f}, "
              f"other person above {np.mean(np.array(diff_f) > thr):.3f}")
    noisy = {name: kinds["noise"] for name, kinds in light.items() if len(kinds.get("noise", []))}
    sent = {name: kinds["vp8"] for name, kinds in light.items() if len(kinds.get("vp8", []))}

    def probes(kind: str = "noise"):
        """(same person?, a clip's gallery, probes): every other clip, and the clip itself after its enrolment;
        ``noise``: the original gallery, probes with sensor noise; ``vp8``: gallery and probes through VP8."""
        enrolled, seen = (embs, noisy) if kind == "noise" else (sent, sent)
        for a, b in itertools.permutations(enrolled, 2):
            if len(enrolled[a]) and b in seen:
                yield owner[a] == owner[b], enrolled[a], seen[b]
        for a in seen:
            if len(enrolled.get(a, [])):
                yield True, enrolled[a], seen[a][5:]

    print("\nper face (one check) by how the gallery is compared, probes with +-2 sensor noise:")
    for how in ("min", "mean", "centroid"):
        sm, df = [], []
        for same, gallery, probe in probes():
            (sm if same else df).extend(per_face(gallery, probe, how))
        gap = np.percentile(df, 1) - np.percentile(sm, 99)
        print(f"  {how:8} same p99 {np.percentile(sm, 99):.3f} max {max(sm):.3f} | other p1 {np.percentile(df, 1):.3f} "
              f"min {min(df):.3f} p50 {np.median(df):.3f} | p1 - p99 {gap:+.3f}")
    print("\nper track (the detector's distance: the mean of the last checks of one face track, here k faces in a "
          "row of one clip), probes with +-2 sensor noise:")
    for kind, title in (("noise", "probes with +-2 sensor noise"),
                        ("vp8", f"gallery and probes through VP8 at {VP8_BITRATE // 1000} kbit/s")):
        print(f"  {title}:")
        for k in (1, 2, 3, 5):
            sm, df = [], []
            for same, gallery, probe in probes(kind):
                checks = per_face(gallery, probe)
                (sm if same else df).extend(windows(checks, k))
            sm_a, df_a = np.array(sm), np.array(df)
            print(f"  k={k}  same p99 {np.percentile(sm, 99):.3f} max {max(sm):.3f} | other p1 "
                  f"{np.percentile(df, 1):.3f} min {min(df):.3f} | over {threshold}: "
                  f"same {np.mean(sm_a > threshold):.3f}, other {np.mean(df_a > threshold):.4f} | "
                  f"equal error {equal_error(sm_a, df_a)}")
    print("\nper track, every gallery of 5 consecutive faces of a clip (one starting every 3rd face), "
          "gallery and probes through VP8:")
    for k in (1, 3):
        sm, df = [], []
        for a, b in itertools.permutations(sent, 2):
            for start in range(0, max(1, len(sent[a]) - 5), 3):
                checks = per_face(sent[a][start:], sent[b])
                (sm if owner[a] == owner[b] else df).extend(windows(checks, k))
        sm_a, df_a = np.array(sm), np.array(df)
        print(f"  k={k}  same over {threshold}: {np.mean(sm_a > threshold):.3f}, other at or under: "
              f"{np.mean(df_a <= threshold):.4f} | equal error {equal_error(sm_a, df_a)}")
    print("\nlighting changes (enrolled on the original clip):")
    for name, kinds in light.items():
        print("  " + name.ljust(12) + "  ".join(
            f"{k} {dist(embs[name], v):.3f} (n={len(v)})" if len(v) else f"{k} no usable face"
            for k, v in kinds.items()))
    print(f"\nembedding cost (chip + descriptor), thread time: mean {np.mean(cost):.1f} ms, "
          f"p95 {np.percentile(cost, 95):.1f} ms over {len(cost)} faces")
    faces.close()


if __name__ == "__main__":
    main()
