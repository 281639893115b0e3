"""The ports: what the layers need from each other, and the errors that cross between them.

The server (`signaling`), the live bot (`bot.live`), the reports (`bot.report`) and the edges (`adapters`)
never import each other; each depends on these interfaces, and `bot.app` plugs the real objects in.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bot.analysis.events import Event

if TYPE_CHECKING:
    from aiortc.mediastreams import MediaStreamTrack


class Capacity(Exception):
    """No bot can take the call now (every worker is full); the API answers 503 with this message."""


class UnknownInterview(LookupError):
    """The interview does not exist (or was deleted meanwhile); the API answers 404."""


class StoreUnavailable(RuntimeError):
    """The database cannot be reached; the API answers 503."""


class CallUnreachable(RuntimeError):
    """The bot could not join the call on the platform it is held on (server away, wrong room or pin); 502."""


class KeyExists(ValueError):
    """An operator key of that name exists (and is not revoked)."""


class OperatorKeys(Protocol):
    """Operator API keys (who may create interviews), stored as hashes only (`adapters.store.Store`).

    A key record is ``{"id", "name", "hash", "created_at", "last_used_at", "revoked_at"}``; the key itself is
    never stored. `signaling.operators` makes keys and checks them against these records.
    """

    async def add_operator_key(self, *, key_id: str, name: str, key_hash: str) -> dict[str, Any]:
        """Store a new key; `KeyExists` if an unrevoked key has that name (a revoked one's name is reused)."""
    async def get_operator_key(self, key_id: str) -> dict[str, Any] | None: ...
    async def operator_key_used(self, key_id: str) -> None:
        """Note the time of its last use."""
    async def list_operator_keys(self) -> list[dict[str, Any]]:
        """Every key record, oldest first, without its hash."""
    async def revoke_operator_key(self, name: str) -> bool:
        """Revoke the unrevoked key of that name; False if there is none."""
    async def has_operator_keys(self) -> bool:
        """True if any unrevoked key is stored."""


class Store(OperatorKeys, Protocol):
    """Interviews, events, snapshots and the audit log (`adapters.store.Store`), and the operator keys."""

    async def create_interview(self, *, candidate_name: str, interviewer_email: str,
                               policy: dict[str, Any] | None,
                               room: dict[str, Any] | None = None) -> dict[str, Any]: ...
    async def get_interview(self, interview_id: str) -> dict[str, Any] | None: ...
    async def update_interview(self, interview_id: str, **fields: Any) -> None: ...
    async def save_event(self, event: Event) -> None: ...
    async def list_events(self, interview_id: str, *, snapshots: bool = False) -> list[Event]: ...
    async def get_snapshot(self, interview_id: str, event_id: str) -> bytes | None: ...
    async def review_event(self, interview_id: str, event_id: str, *, state: str, by: str,
                           note: str = "") -> Event | None: ...
    async def audit_log(self, interview_id: str) -> list[dict[str, Any]]: ...
    async def delete_interview(self, interview_id: str) -> bool: ...
    async def close(self) -> None: ...


Attachment = tuple[str, bytes, str]  # (file name, content, MIME type)


class Delivery(Protocol):
    """How a report was mailed (`adapters.mail.MailResult`)."""

    def public(self) -> dict[str, Any]:
        """``{"delivered": "smtp"|"outbox", "to": [...]}``: what API answers and the database may show (no
        server path, no SMTP error text)."""
    def describe(self) -> str:
        """One line for the server's log (may name the outbox file)."""


class Mailer(Protocol):
    """Sends the report (`adapters.mail.Mailer`: SMTP, or an ``.eml`` in the outbox)."""

    async def send_report(self, to: str | Sequence[str], subject: str, body_text: str,
                          attachments: Sequence[Attachment] = ()) -> Delivery: ...


class Bots(Protocol):
    """Brings the bot into calls and out of them: `bot.fleet.bots.FleetBots` (each call in a worker's child
    process) or `bot.live.registry.CallRegistry` (in this process; tests and debugging)."""

    async def invite(self, interview: dict[str, Any], bot_token: str, server_url: str) -> None:
        """Start the bot for the interview (idempotent while it runs); `Capacity` when full."""
    async def end(self, interview_id: str) -> None:
        """Ask the bot to leave and wait until it has (its closing events sent)."""
    async def is_present(self, interview_id: str) -> bool: ...
    async def close(self) -> None: ...


class Reports(Protocol):
    """Reports of stored interviews (`bot.report.service.Reports`); `UnknownInterview` if there is none."""

    async def pdf(self, interview_id: str) -> bytes: ...
    async def csv(self, interview_id: str) -> str: ...
    async def json(self, interview_id: str) -> dict[str, Any]: ...
    async def finish(self, interview_id: str) -> dict[str, Any]: ...


@runtime_checkable
class MediaSource(Protocol):
    """Where the candidate's media comes from when the call is on another platform (`adapters.conferencing`:
    a Janus VideoRoom, a WHEP endpoint): one call on one platform."""

    @property
    def state(self) -> str:
        """"joining", "receiving", "waiting for the candidate", "reconnecting" or "left"."""
        ...

    async def join(self, on_track: Callable[[MediaStreamTrack], None]) -> None:
        """Enter the call; returns once in (raises if the first attempt fails).

        Afterwards the source follows the candidate by itself (republish, reconnect, server restart)
        and calls ``on_track`` with every track it receives, replacements included. The caller must
        read every track it is given (aiortc queues frames nobody reads without limit).
        """
        ...

    async def leave(self) -> None:
        """Leave the call and release everything; idempotent."""
        ...


# Opens the media source of an interview's stored room description (`bot.rooms`, secrets included), not joined
# yet; the second argument hears its state changes. `adapters.conferencing.open_media`.
OpenMedia = Callable[[Mapping[str, Any], Callable[[str], None] | None], MediaSource]

class Webhooks(Protocol):
    """Notifies the systems interviews are scheduled from (`adapters.webhooks.WebhookSender`).

    `send` returns once the delivery is written to the durable outbox; a background sender posts it, signed,
    and retries it with backoff. Never call it on the path of an alert to the interviewer.
    """

    async def send(self, event: str, data: dict[str, Any], *, key: str | None = None) -> str:
        """Queue ``event`` with ``data``; returns the delivery id. ``key`` names the fact (e.g. an event's
        opening): a second send with the same key is not queued again (same delivery id)."""
    async def close(self) -> None: ...
