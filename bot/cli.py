"""The `proctor` command.

    proctor analyze VIDEO [--audio FILE] [--policy FILE] --out DIR
    proctor analyze VIDEO|DIR|GLOB... [--jobs N] --out DIR     (a backlog: OUT/<name>/ each)
    proctor serve [--host H] [--port P] [--no-worker]
    proctor worker [--drain-timeout S] [--worker-id ID]
    proctor models list | fetch [NAME...] | verify
    proctor keys create NAME | list | revoke NAME
    proctor config

Errors the user can fix (a missing model, an unreadable video, a bad policy)
print one line on stderr and exit non-zero; they never print a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from bot.settings import Settings

EXIT_USAGE = 2
EXIT_INPUT = 3  # bad input file / policy / missing model


def _fail(msg: str, code: int = EXIT_INPUT) -> int:
    print(f"proctor: error: {msg}", file=sys.stderr)
    return code


def cmd_analyze(args: argparse.Namespace) -> int:
    from adapters.models import ModelError, model_paths
    from bot.analysis.policy import Policy, PolicyError
    from bot.batch import BatchError, expand

    try:
        policy = Policy.load(args.policy) if args.policy else Policy()
        files = expand(args.video)
        models = model_paths(Settings.from_env())
    except (BatchError, ModelError, PolicyError) as e:
        return _fail(str(e))
    if len(files) == 1 and len(args.video) == 1 and Path(args.video[0]).is_file():
        return _analyze_one(files[0], args, policy, models)
    if args.audio:
        return _fail("--audio goes with one video; several recordings use their own audio tracks", EXIT_USAGE)
    return _analyze_many(files, args, policy, models)


def _analyze_one(video: Path, args: argparse.Namespace, policy: Any, models: Any) -> int:
    from adapters.models import ModelError
    from bot.analysis.offline import analyze_file
    from bot.analysis.recording import MediaError
    from bot.report.files import write_outputs

    try:
        result = analyze_file(video, models=models, audio=args.audio, policy=policy,
                              progress=None if not args.no_progress else False)
        paths = write_outputs(result, args.out, policy=policy, source=video, audio=args.audio)
    except (MediaError, ModelError) as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"{e.filename or args.out}: {e.strerror or e}")
    s = result.score
    print(f"{len(result.events)} events in {result.media_seconds:.1f} s of media "
          f"(analysed in {result.wall_seconds:.1f} s, {result.samples} frames sampled)")
    for ev in result.events:
        label = ev.detail.get("label")
        print(f"  {ev.start:7.1f}-{(ev.end if ev.end is not None else ev.start):7.1f} s  {ev.type}"
              f"{f' ({label})' if label else ''}  conf {ev.confidence:.2f}")
    print(f"integrity score {s.value:.1f}/100, risk {s.risk}{', needs review' if s.needs_review else ''}")
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _analyze_many(files: list[Path], args: argparse.Namespace, policy: Any, models: Any) -> int:
    from bot.batch import analyse_many

    started = time.perf_counter()
    outcomes = analyse_many(files, Path(args.out), models=models, policy=policy, jobs=args.jobs,
                            progress=None if not args.no_progress else False)
    wall = time.perf_counter() - started
    media = sum(o.media_seconds for o in outcomes)
    failed = [o for o in outcomes if not o.ok]
    for o in outcomes:
        print(f"{'ok ' if o.ok else 'ERR'} {o.source} -> {o.out}: {o.message}")
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} recordings analysed: {media:.0f} s of media in "
          f"{wall:.0f} s ({media / wall if wall > 0 else 0:.1f}x real time)")
    return EXIT_INPUT if failed else 0


def cmd_models(args: argparse.Namespace) -> int:
    from adapters import models

    settings = Settings.from_env()
    try:
        if args.action == "fetch":
            models.fetch(args.names or None, settings=settings)
        rows = models.status(settings) + models.packaged_status()
    except models.ModelError as e:
        return _fail(str(e))
    ok = True
    for row in rows:
        mark = "ok" if row["verified"] else ("BAD" if row["present"] else "missing")
        ok &= bool(row["verified"])
        print(f"{mark:8} {row['name']:38} {row['path'] or ''}")
        if not row["verified"] and row.get("message"):
            print(f"         {row['message']}")
    return 0 if ok or args.action == "list" else EXIT_INPUT


def cmd_keys(args: argparse.Namespace) -> int:
    import asyncio

    from adapters.embedded_db import EmbeddedMongoError
    from bot import app
    from bot.ports import KeyExists, StoreUnavailable

    settings = Settings.from_env()
    if args.action in ("create", "revoke") and not args.name:
        return _fail(f"keys {args.action} needs a NAME", EXIT_USAGE)
    if args.action == "list" and args.name:
        return _fail("keys list takes no NAME", EXIT_USAGE)
    try:
        if args.action == "create":
            key = asyncio.run(app.create_key(settings, args.name))
            print(key)
            print(f"operator key {args.name!r} created; it is shown only now (only its hash is stored). "
                  f"Start page: {settings.base_url}/#key={key}", file=sys.stderr)
        elif args.action == "revoke":
            if not asyncio.run(app.revoke_key(settings, args.name)):
                return _fail(f"no active operator key named {args.name!r}")
            print(f"operator key {args.name!r} revoked")
        else:
            rows = asyncio.run(app.list_keys(settings))
            print(f"{'NAME':24} {'CREATED':25} {'LAST USED':25} STATUS")
            for r in rows:
                status = f"revoked {r['revoked_at']}" if r.get("revoked_at") else "active"
                print(f"{r['name']:24} {r['created_at'] or '-':25} {r.get('last_used_at') or '-':25} {status}")
            if settings.api_key:
                print(f"{'env':24} {'-':25} {'-':25} active (PROCTOR_API_KEY)")
    except ValueError as e:  # a bad name; KeyExists is one too
        return _fail(str(e), EXIT_INPUT if isinstance(e, KeyExists) else EXIT_USAGE)
    except (EmbeddedMongoError, StoreUnavailable) as e:  # e.g. the server holds the embedded database
        return _fail(str(e))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(Settings.from_env().masked(), indent=2))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from adapters.models import ModelError
    from bot.app import serve
    from signaling.server import PagesMissing

    settings = Settings.from_env()
    if args.host:
        settings.host = args.host
    if args.port:
        settings.port = args.port
    try:
        serve(settings, worker=not args.no_worker)
    except (ModelError, PagesMissing) as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from adapters.models import ModelError
    from bot.callproc import work

    try:
        work(Settings.from_env(), drain_timeout=args.drain_timeout, worker_id=args.worker_id)
    except (ModelError, ValueError) as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="proctor",
        description="Proctoring bot for video interviews: analyse a recording, or run the live "
                    "signaling server whose bot joins calls as a silent, visible peer.",
        epilog="Configuration comes from the environment: see `proctor config` and the README.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    a = sub.add_parser("analyze", help="analyse a recorded interview",
                       description="Run face, gaze, object, audio and camera detectors over a recording; "
                                   "write events.json, report.pdf, report.csv and evidence snapshots.")
    a.add_argument("video", nargs="+", help="video file (mp4, mkv, webm, avi, gif... anything FFmpeg or OpenCV "
                                            "reads); several files, folders or globs analyse a backlog, each into "
                                            "OUT/<name>/, with one progress bar")
    a.add_argument("--audio", help="separate audio file (default: the video's own audio track, if any)")
    a.add_argument("--jobs", type=int, help="recordings analysed at once (default: the machine's cores)")
    a.add_argument("--policy", help="YAML or JSON file overriding the default policy (rates, thresholds, "
                                    "dwell times, score weights)")
    a.add_argument("--out", required=True, help="directory for the outputs (created if missing)")
    a.add_argument("--no-progress", action="store_true", help="no progress bar")
    a.set_defaults(func=cmd_analyze)

    s = sub.add_parser("serve", help="run the signaling server, web pages and a local bot worker",
                       description="Start the HTTP + Socket.IO server. With no MONGODB_URI it starts an "
                                   "embedded MongoDB-wire server; with no SMTP_HOST reports go to an outbox.")
    s.add_argument("--host", help="address to listen on (default PROCTOR_HOST or 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default PROCTOR_PORT or 8080)")
    s.add_argument("--no-worker", action="store_true",
                   help="run only signaling and the API; calls go to `proctor worker` processes (REDIS_URL)")
    s.set_defaults(func=cmd_serve)

    w = sub.add_parser("worker", help="take calls from Redis and run each in a supervised child process",
                       description="A bot worker of the fleet: needs REDIS_URL and the models. It takes calls "
                                   "while under PROCTOR_LOAD_THRESHOLD of its cores and PROCTOR_MAX_BOTS calls; "
                                   "each call runs in its own process, restarted if it crashes or hangs. "
                                   "SIGTERM drains (no new call; running calls finish), a second one hands them "
                                   "to other workers.")
    w.add_argument("--drain-timeout", type=float, help="seconds a drain waits for the calls to end before "
                                                       "handing them to other workers (default: no limit)")
    w.add_argument("--worker-id", help="this worker's name in Redis (default: host-pid-random)")
    w.set_defaults(func=cmd_worker)

    m = sub.add_parser("models", help="list, fetch or verify model files",
                       description="Models are looked up in PROCTOR_MODELS_DIR, then the user cache; "
                                   "each is checked against its sha256.")
    m.add_argument("action", choices=["list", "fetch", "verify"])
    m.add_argument("names", nargs="*", help="models to fetch (default: all missing)")
    m.set_defaults(func=cmd_models)

    k = sub.add_parser("keys", help="create, list or revoke operator API keys (who may create interviews)",
                       description="Operator API keys let the start page and POST /api/interviews create "
                                   "interviews (Authorization: Bearer KEY). Only a hash of each key is stored: "
                                   "`create` prints the key once. PROCTOR_API_KEY adds one from the environment.")
    k.add_argument("action", choices=["create", "list", "revoke"])
    k.add_argument("name", nargs="?", help="the key's name (create, revoke)")
    k.set_defaults(func=cmd_keys)

    c = sub.add_parser("config", help="print the effective settings (secrets masked)")
    c.set_defaults(func=cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # fpdf2's font subsetting chatter
    # pymongo's DEBUG lines quote whole documents: an interview's room with its pin or bearer token
    logging.getLogger("pymongo").setLevel(logging.INFO)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
