"""
Tests for the C{event-log} handler (L{sipcore.handlers.eventlog}) and
C{--log-events}.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from sipcore.events import TCP_RESET
from sipcore.tap import Options, buildService
from sipcore.testing import FakeFlow, FakeStreamFlow, LogCapture, UDPMemoryReactor


def register(contact: str, expires: int, cseq: int, via: str = "TCP") -> bytes:
    return (
        "REGISTER sip:localhost SIP/2.0\r\n"
        "Via: SIP/2.0/{via} 192.0.2.7:5070;branch=z9hG4bKr{cseq}\r\n"
        "From: <sip:alice@localhost>;tag=1\r\nTo: <sip:alice@localhost>\r\n"
        "Call-ID: r1\r\nCSeq: {cseq} REGISTER\r\nMax-Forwards: 70\r\n"
        "Contact: <{contact}>;expires={expires}\r\nContent-Length: 0\r\n\r\n"
    ).format(contact=contact, expires=expires, cseq=cseq, via=via).encode()


class EventLogTests(SynchronousTestCase):
    """
    With C{--log-events} each registration change and each connection
    close is one log line.
    """

    def serve(self, *args: str) -> Any:
        options = Options()
        options.parseOptions(list(args))
        self.reactor = UDPMemoryReactor()
        service = buildService(options, self.reactor)
        self.successResultOf(service.startService())
        self.addCleanup(service.stopService)
        return service

    def lines(self, capture: LogCapture) -> list[str]:
        return [formatEvent(event) for event in capture.at(LogLevel.info)]

    def test_registrationAndClose(self) -> None:
        """
        A binding added over a TCP connection is one line; its refresh is
        none; the connection's close is one line naming its conid,
        transport, peer, address of record and reason; an expired UDP
        binding is one line.
        """
        service = self.serve("--log-events")
        capture = LogCapture(self, "sipcore.handlers.eventlog")
        flow = FakeStreamFlow("tcp", remote=("192.0.2.7", 5070))
        conid = service.table.add(flow)
        contact = "sip:alice@192.0.2.7:5070;transport=tcp"
        service.core.messageReceived(register(contact, 600, 1), flow)
        self.reactor.advance(0)
        service.core.messageReceived(register(contact, 600, 2), flow)
        self.reactor.advance(0)
        self.assertEqual(self.lines(capture), [
            "registration added: alice@localhost contact {} transport tcp conid {}".format(
                contact, conid)])
        service.table.remove(conid, TCP_RESET, "Connection lost")
        self.reactor.advance(1)
        self.assertEqual(self.lines(capture)[1:], [
            "connection {} closed: transport tcp peer 192.0.2.7:5070 aor alice@localhost, "
            "tcp:reset: Connection lost".format(conid)])
        udp = FakeFlow("udp", remote=("192.0.2.8", 5070))
        service.core.messageReceived(register("sip:alice@192.0.2.8:5070", 60, 3, "UDP"), udp)
        self.reactor.advance(0)
        self.reactor.advance(120)
        self.assertEqual(self.lines(capture)[2:], [
            "registration added: alice@localhost contact sip:alice@192.0.2.8:5070 "
            "transport udp conid none",
            "registration expired: alice@localhost contact sip:alice@192.0.2.8:5070 "
            "transport udp conid none"])

    def test_refreshes(self) -> None:
        """
        With C{refreshes=yes} a refresh is logged too.
        """
        service = self.serve("--log-events", "--handler-option", "event-log:refreshes=yes")
        capture = LogCapture(self, "sipcore.handlers.eventlog")
        udp = FakeFlow("udp", remote=("192.0.2.8", 5070))
        for cseq in (1, 2):
            service.core.messageReceived(
                register("sip:alice@192.0.2.8:5070", 600, cseq, "UDP"), udp)
            self.reactor.advance(0)
        self.assertEqual([line.split(":")[0] for line in self.lines(capture)],
                         ["registration added", "registration refreshed"])

    def test_offByDefault(self) -> None:
        """
        Without C{--log-events} the handler is not enabled and logs nothing.
        """
        service = self.serve()
        self.assertNotIn("event-log", [handler.name for handler in service.handlers])
        capture = LogCapture(self, "sipcore.handlers.eventlog")
        udp = FakeFlow("udp", remote=("192.0.2.8", 5070))
        service.core.messageReceived(register("sip:alice@192.0.2.8:5070", 600, 1, "UDP"), udp)
        self.reactor.advance(0)
        self.assertEqual(self.lines(capture), [])
