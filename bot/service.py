"""`proctor serve`: the signaling server with bot workers and reports wired in."""
from __future__ import annotations

import logging

from adapters.mail import Mailer
from adapters.models import status
from bot.reporting import Reports
from bot.settings import Settings
from bot.worker import BotWorker

log = logging.getLogger(__name__)


def check_models(settings: Settings) -> None:
    """Fail at start, in one line, rather than when the first bot is invited."""
    from adapters.models import ModelError

    for row in status(settings):
        if not row["verified"]:
            raise ModelError(row["message"] or f"model {row['name']} is not usable")


def serve(settings: Settings) -> None:
    from signaling.server import run

    check_models(settings)
    run(settings, bots=BotWorker(settings), reports=lambda store: Reports(store, Mailer(settings)))
