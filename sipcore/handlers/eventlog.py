# -*- test-case-name: tests.test_eventlog -*-
"""
The C{event-log} handler: one log line per registration change and per
stream connection close, for operators following their clients
(C{--log-events} turns it on).

A binding added, removed or expired is one line with its address of
record, contact, transport and connection id; a refresh is logged only with
the option C{refreshes=yes} (clients refresh every few minutes, so those
lines are the bulk of a busy log).  A connection close is one line with its
conid, transport, peer, the addresses of record registered over it, the
close event and its reason.  Nothing else is logged, and no credential is
ever part of an event.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.python import usage

from sipcore.events import (
    CLOSE_EVENTS,
    REGISTRATION_ADDED,
    REGISTRATION_EXPIRED,
    REGISTRATION_REFRESHED,
    REGISTRATION_REMOVED,
    ConnectionEvent,
    RegistrationEvent,
)
from sipcore.interfaces import IHandlerContext
from sipcore.plugin import Handler, boolean, handles

__all__ = ["EventLog"]


def _transport(received: str | None, connectionId: int) -> str:
    """
    The transport of a binding, read from its C{received} URI
    (C{sip:HOST:PORT;transport=T}).
    """
    if received:
        for param in received.split(";")[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "transport" and value:
                return value.strip().lower()
    return "udp" if connectionId <= 0 else "unknown"


class EventLog(Handler):
    """
    Logs registration changes and connection closes, one line each.

    @ivar aors: the addresses of record registered over each live stream
        connection, by connection id (for the close line).
    """

    _log = Logger()

    class Options(usage.Options):
        optParameters = [
            ["refreshes", None, False, "log refreshed bindings too (yes/no)", boolean],
        ]

    def __init__(self, context: IHandlerContext) -> None:
        super().__init__(context)
        self.aors: dict[int, set[str]] = {}

    @handles(REGISTRATION_ADDED, REGISTRATION_REFRESHED, REGISTRATION_REMOVED,
             REGISTRATION_EXPIRED)
    def registrationChanged(self, event: RegistrationEvent) -> None:
        """
        Log one binding's change; remember the addresses of record of each
        connection.
        """
        change = event.name.partition(":")[2]
        conid = event.connectionId
        if conid > 0:
            if event.name in (REGISTRATION_ADDED, REGISTRATION_REFRESHED):
                self.aors.setdefault(conid, set()).add(event.aor)
        if event.name == REGISTRATION_REFRESHED and not self.options["refreshes"]:
            return
        self._log.info(
            "registration {change}: {aor} contact {contact} transport {transport} conid {conid}",
            change=change, aor=event.aor, contact=event.contact,
            transport=_transport(event.received, conid),
            conid=conid if conid > 0 else "none")

    @handles(*CLOSE_EVENTS)
    def connectionClosed(self, event: ConnectionEvent) -> None:
        """
        Log one connection's close.
        """
        aors = self.aors.pop(event.conid, set())
        self._log.info(
            "connection {conid} closed: transport {transport} peer {peer} aor {aors}, "
            "{event}: {reason}",
            conid=event.conid, transport=event.transport,
            peer="{}:{}".format(*event.remote), aors=", ".join(sorted(aors)) or "none",
            event=event.name, reason=event.reason or "")
