"""One settings object, read from the environment, with defaults that work on a laptop.

``proctor config`` prints it (secrets masked).
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import overload

import platformdirs

APP = "proctor-bot"


@overload
def _env(name: str) -> str | None: ...
@overload
def _env(name: str, default: str) -> str: ...
def _env(name: str, default: str | None = None) -> str | None:
    """The variable's value; `default` when it is unset or empty."""
    v = os.environ.get(name)
    return default if v is None or v == "" else v


def _path(name: str) -> Path | None:
    v = _env(name)
    return Path(v) if v else None


def _int(name: str, default: int) -> int:
    v = _env(name)
    if v is None:
        return default
    try:
        return int(v)
    except ValueError:
        raise SystemExit(f"error: {name} must be an integer, got {v!r}") from None


def _bool(name: str, default: bool) -> bool:
    v = _env(name)
    if v is None:
        return default
    return v.strip().lower() in ("1", "true", "yes", "on")


def data_dir() -> Path:
    return Path(_env("PROCTOR_DATA_DIR") or platformdirs.user_data_dir(APP))


def cache_dir() -> Path:
    return Path(_env("PROCTOR_CACHE_DIR") or platformdirs.user_cache_dir(APP))


SECRET_FIELDS = {"secret_key", "smtp_password", "mongodb_uri", "redis_url", "api_key", "webhook_secret", "webhook_url"}
MIN_API_KEY = 16  # characters of PROCTOR_API_KEY


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None  # base URL put into invitation links
    secret_key: str = ""  # signs tokens; generated and kept in the data dir if unset
    token_ttl: int = 4 * 3600  # seconds an invitation token is valid
    models_dir: Path | None = None  # PROCTOR_MODELS_DIR; else the cache dir
    data_dir: Path = field(default_factory=data_dir)
    cache_dir: Path = field(default_factory=cache_dir)
    mongodb_uri: str | None = None  # None: start the embedded MongoDB-wire server
    mongodb_db: str = "proctor"
    retention_days: int = 90
    spool_max_events: int = 10000
    smtp_host: str | None = None  # None: write .eml files into the outbox
    smtp_port: int = 587
    smtp_tls: str = "starttls"  # "starttls", "tls" or "none"
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "proctor-bot@localhost"
    outbox_dir: Path | None = None
    max_bots: int = 4  # calls analysed at once (measured: 4 fit on 2 cores, benchmarks/bench_live.py)
    redis_url: str | None = None  # REDIS_URL: the fleet's dispatch and the signaling nodes' bus; None: one machine
    claim_timeout: float = 5.0  # s an invitation waits for a worker to take the call before it answers 503
    api_key: str | None = None  # PROCTOR_API_KEY: one operator key from the environment (others: `proctor keys`)
    create_rate: int = 30  # interviews one operator key may create per minute
    webhook_url: str | None = None  # None: no webhooks
    webhook_secret: str = ""  # signs each delivery (HMAC-SHA256); required with webhook_url
    webhook_max_age: float = 24 * 3600  # seconds a delivery is retried before it is given up
    webhook_retry_min: float = 2.0  # first retry delay (seconds); doubles per attempt, with jitter
    webhook_retry_max: float = 3600.0  # longest delay between two attempts

    @classmethod
    def from_env(cls) -> Settings:
        s = cls(
            host=_env("PROCTOR_HOST", "127.0.0.1"),
            port=_int("PROCTOR_PORT", 8080),
            public_url=_env("PROCTOR_PUBLIC_URL"),
            secret_key=_env("PROCTOR_SECRET_KEY", ""),
            token_ttl=_int("PROCTOR_TOKEN_TTL", 4 * 3600),
            models_dir=_path("PROCTOR_MODELS_DIR"),
            mongodb_uri=_env("MONGODB_URI"),
            mongodb_db=_env("MONGODB_DB", "proctor"),
            retention_days=_int("PROCTOR_RETENTION_DAYS", 90),
            spool_max_events=_int("PROCTOR_SPOOL_MAX_EVENTS", 10000),
            smtp_host=_env("SMTP_HOST"),
            smtp_port=_int("SMTP_PORT", 587),
            smtp_tls=_env("SMTP_TLS", "starttls").lower(),
            smtp_user=_env("SMTP_USER"),
            smtp_password=_env("SMTP_PASSWORD"),
            smtp_from=_env("SMTP_FROM", "proctor-bot@localhost"),
            outbox_dir=_path("PROCTOR_OUTBOX_DIR"),
            max_bots=_int("PROCTOR_MAX_BOTS", 4),
            redis_url=_env("REDIS_URL"),
            claim_timeout=float(_int("PROCTOR_CLAIM_TIMEOUT", 5)),
            api_key=_env("PROCTOR_API_KEY"),
            create_rate=_int("PROCTOR_CREATE_RATE", 30),
            webhook_url=_env("PROCTOR_WEBHOOK_URL"),
            webhook_secret=_env("PROCTOR_WEBHOOK_SECRET", ""),
            webhook_max_age=_int("PROCTOR_WEBHOOK_MAX_AGE", 24 * 3600),
        )
        if s.webhook_url:
            if not s.webhook_url.startswith(("http://", "https://")):
                raise SystemExit(f"error: PROCTOR_WEBHOOK_URL must be an http(s) URL, got {s.webhook_url!r}")
            if not s.webhook_secret:
                raise SystemExit("error: PROCTOR_WEBHOOK_URL needs PROCTOR_WEBHOOK_SECRET (deliveries are signed)")
        if s.smtp_tls not in ("starttls", "tls", "none"):
            raise SystemExit(f"error: SMTP_TLS must be starttls, tls or none, got {s.smtp_tls!r}")
        if s.api_key is not None and (len(s.api_key) < MIN_API_KEY or not s.api_key.isascii()
                                      or not s.api_key.isprintable()
                                      or s.api_key != s.api_key.strip()):
            raise SystemExit(f"error: PROCTOR_API_KEY must be at least {MIN_API_KEY} printable ASCII "
                             "characters without surrounding spaces")
        if s.create_rate < 1:
            raise SystemExit(f"error: PROCTOR_CREATE_RATE must be at least 1 (per minute), got {s.create_rate}")
        return s

    @property
    def outbox(self) -> Path:
        return self.outbox_dir or (self.data_dir / "outbox")

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def ensure_secret(self) -> str:
        """The token-signing key: from the environment, else kept in the data dir."""
        if not self.secret_key:
            path = self.data_dir / "secret.key"
            if path.exists():
                self.secret_key = path.read_text().strip()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.secret_key = secrets.token_urlsafe(32)
                path.write_text(self.secret_key)
                path.chmod(0o600)
        return self.secret_key

    def masked(self) -> dict[str, str]:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in SECRET_FIELDS and v:
                v = "****"
            out[f.name] = "" if v is None else str(v)
        return out
