# -*- test-case-name: tests.test_admin_status -*-
"""
The status page of the admin listener (C{GET /status}: plain HTML and a
small script that polls the admin API), and the recent connection closes
it shows (L{RecentCloses}, a subscriber of the bus).
"""

from __future__ import annotations

from collections import deque
from importlib.resources import files
from typing import Any

from sipcore.events import CLOSE_EVENTS, WEBSOCKET_CLOSED

__all__ = ["RecentCloses", "statusPage"]


class RecentCloses:
    """
    The last C{size} connection close events, newest first, for the status
    page and C{GET /api/closes}.
    """

    name = "admin-recent-closes"
    events = (*CLOSE_EVENTS, WEBSOCKET_CLOSED)
    priority = 1000
    timeout = None
    concurrency = None
    backlog = None

    def __init__(self, size: int = 50) -> None:
        self._closes: deque[dict[str, Any]] = deque(maxlen=size)

    def handle(self, event: Any) -> None:
        """
        Keep one close event.
        """
        self._closes.appendleft({
            "event": event.name,
            "conid": event.conid,
            "transport": event.transport,
            "remote": list(event.remote),
            "time": event.time,
            "reason": event.reason,
            "duration": event.duration,
        })

    def recent(self) -> list[dict[str, Any]]:
        """
        @return: the kept close events, newest first.
        """
        return list(self._closes)


def statusPage() -> bytes:
    """
    @return: the status page's HTML.
    """
    return files("sipcore.admin").joinpath("status.html").read_bytes()
