"""What the tests (and the benchmarks) share: paths, real servers, clients, media, waiting.

Nothing here imports pytest, so the benchmarks run in the venv that ./scripts/setup makes.

- `paths`: REPO, SHARED, MEDIA, MODELS.
- `servers`: `MongoServer` (the embedded SecantusDB as the tests' database, restartable, killable),
  `SmtpSink`/`SmtpServer` (aiosmtpd), `free_port`.
- `clients`: Socket.IO clients that queue what they receive (`Peer`), `Listener` (alerts with arrival times),
  `http`, `pdf_text`, `outbox_mails`, and `served` (the real app on a free port, from `bot.app`).
- `candidate`: `CandidatePeer`, an aiortc candidate streaming real media; `LoopingTrack`.
- `scenario`: recordings composed from the shared media with a known timeline.
- `waiting`: `wait_for`.
"""
