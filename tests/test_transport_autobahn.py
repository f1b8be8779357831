# -*- test-case-name: tests.test_transport_autobahn -*-
"""
Tests for L{sipcore.transport._autobahn}: the autobahn internals it uses
are still there, with the meaning it relies on.  These fail when autobahn
changes them.
"""

from __future__ import annotations

import ast
import inspect
import textwrap

import autobahn.websocket.protocol
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sipcore.transport._autobahn import (
    HANDSHAKE_STATE,
    FrameState,
    QuietConnectionLost,
    cancelCloseHandshakeTimer,
    closeState,
    readOptionsFromFactory,
    useReactorTimers,
)
from tests.test_transport_websocket import LOCAL, PEER, handshake


def _body(function: object) -> list[ast.stmt]:
    """
    The statements of C{function}, its docstring left out.
    """
    source = textwrap.dedent(inspect.getsource(function))  # type: ignore[arg-type]
    [definition] = ast.parse(source).body
    assert isinstance(definition, ast.FunctionDef)
    statements = definition.body
    if statements and isinstance(statements[0], ast.Expr) and isinstance(
            statements[0].value, ast.Constant):
        statements = statements[1:]
    return statements


class AutobahnInternalsTests(SynchronousTestCase):
    """
    What L{sipcore.transport._autobahn} assumes of autobahn.
    """

    def test_batchedTimer(self) -> None:
        """
        A factory (server or client) has a C{_batched_timer} whose
        C{call_later} the protocol uses for every timer it starts;
        L{useReactorTimers} replaces it with one on the given clock, whose
        calls may be cancelled after they ran.
        """
        clock = Clock()
        client = WebSocketClientFactory("ws://127.0.0.1:80/", reactor=clock)
        self.assertTrue(callable(client._batched_timer.call_later))
        factory = WebSocketServerFactory(reactor=clock)
        self.assertTrue(callable(factory._batched_timer.call_later))
        source = inspect.getsource(autobahn.websocket.protocol)
        self.assertGreaterEqual(source.count("self.factory._batched_timer.call_later("), 4)
        useReactorTimers(factory, clock)
        fired: list[int] = []
        call = factory._batched_timer.call_later(1.5, fired.append, 1)
        self.assertEqual([c.getTime() for c in clock.getDelayedCalls()], [1.5])
        clock.advance(1.5)
        self.assertEqual(fired, [1])
        call.cancel()

    def test_configAttributes(self) -> None:
        """
        The server protocol's options are named in C{CONFIG_ATTRS}, which
        C{_connectionMade} copies from the factory only onto a connection
        that has none of its own; after L{readOptionsFromFactory} a
        connection reads them from its factory.
        """
        names = WebSocketServerProtocol.CONFIG_ATTRS
        self.assertTrue(all(isinstance(name, str) for name in names))
        for name in ("openHandshakeTimeout", "closeHandshakeTimeout", "autoPingInterval",
                     "autoPingTimeout", "maxMessagePayloadSize", "maxFramePayloadSize",
                     "failByDrop"):
            self.assertIn(name, names)
        self.assertIn("if not hasattr(self, configAttr):",
                      inspect.getsource(WebSocketProtocol._connectionMade))

        class Protocol(WebSocketServerProtocol):  # type: ignore[misc]
            pass

        readOptionsFromFactory(Protocol)
        factory = WebSocketServerFactory(reactor=Clock())
        factory.setProtocolOptions(openHandshakeTimeout=7.0)
        protocol = Protocol()
        protocol.factory = factory
        # autobahn's options are not declared on its protocol classes.
        self.assertEqual(protocol.openHandshakeTimeout, 7.0)  # type: ignore[attr-defined]
        self.assertNotIn("openHandshakeTimeout", vars(protocol))

    def test_connectionLost(self) -> None:
        """
        The server protocol's C{_connectionLost(reason)} does nothing but
        log, call the base protocol's and count the connection out, which
        is what L{QuietConnectionLost} does without the log line.
        """
        self.assertEqual(list(inspect.signature(WebSocketServerProtocol._connectionLost).parameters),
                         ["self", "reason"])
        kept = []
        for statement in _body(WebSocketServerProtocol._connectionLost):
            text = ast.unparse(statement)
            if not text.startswith("self.log.debug("):
                kept.append(text)
        self.assertEqual(kept, ["WebSocketProtocol._connectionLost(self, reason)",
                                "self.factory.countConnections -= 1"])
        self.assertEqual([ast.unparse(s) for s in _body(QuietConnectionLost._connectionLost)],
                         kept)

    def test_handshakeState(self) -> None:
        """
        Each attribute L{HANDSHAKE_STATE} names is one autobahn has set on a
        server connection by the time the WebSocket opens.
        """
        missing: list[list[str]] = []

        class Protocol(WebSocketServerProtocol):  # type: ignore[misc]
            def onOpen(self) -> None:
                missing.append([name for name in HANDSHAKE_STATE if name not in vars(self)])

        clock = MemoryReactorClock()
        factory = WebSocketServerFactory(reactor=clock)
        useReactorTimers(factory, clock)
        factory.protocol = Protocol
        protocol = factory.buildProtocol(PEER)
        assert isinstance(protocol, Protocol)
        protocol.makeConnection(StringTransport(hostAddress=LOCAL, peerAddress=PEER))
        protocol.dataReceived(handshake(protocols=None))
        self.assertEqual(missing, [[]])
        protocol.connectionLost(Failure(ConnectionDone()))

    def _server(self, cls: type[WebSocketServerProtocol]) -> tuple[
            WebSocketServerProtocol, MemoryReactorClock]:
        clock = MemoryReactorClock()
        factory = WebSocketServerFactory(reactor=clock)
        useReactorTimers(factory, clock)
        factory.protocol = cls
        protocol = factory.buildProtocol(PEER)
        assert isinstance(protocol, cls)
        protocol.makeConnection(StringTransport(hostAddress=LOCAL, peerAddress=PEER))
        return protocol, clock

    def test_closeStateInitialised(self) -> None:
        """
        autobahn's C{connectionMade} sets every attribute L{closeState}
        reads, so it can be read as soon as the connection is made: nothing
        has closed yet.
        """
        protocol, _ = self._server(WebSocketServerProtocol)
        for name in ("closedByMe", "failedByMe", "wasClean", "wasOpenHandshakeTimeout",
                     "wasCloseHandshakeTimeout", "localCloseCode", "localCloseReason",
                     "remoteCloseCode", "remoteCloseReason", "closeHandshakeTimeoutCall"):
            self.assertIn(name, vars(protocol))
        state = closeState(protocol)
        self.assertEqual(
            (state.closedByMe, state.failedByMe, state.wasClean, state.openHandshakeTimeout,
             state.closeHandshakeTimeout, state.localCode, state.remoteCode),
            (False, False, False, False, False, None, None))
        protocol.connectionLost(Failure(ConnectionDone()))

    def test_closeStateOfServerClose(self) -> None:
        """
        After the server sends a close frame, L{closeState} says it closed
        first, with the frame's code and reason as text; autobahn's closing
        handshake timer runs until L{cancelCloseHandshakeTimer} cancels it.
        """
        protocol, clock = self._server(WebSocketServerProtocol)
        protocol.dataReceived(handshake())
        protocol.sendClose(1000, "bye")
        state = closeState(protocol)
        self.assertTrue(state.closedByMe)
        self.assertEqual((state.localCode, state.localReason), (1000, "bye"))
        self.assertIsNotNone(protocol.closeHandshakeTimeoutCall)
        cancelCloseHandshakeTimer(protocol)
        self.assertIsNone(protocol.closeHandshakeTimeoutCall)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_frameState(self) -> None:
        """
        autobahn sets C{inside_message} and C{current_frame} on a connection
        when its opening handshake completes, to the values L{FrameState}
        gives before it.
        """
        seen: list[tuple[object, object]] = []

        class Protocol(FrameState, WebSocketServerProtocol):  # type: ignore[misc]
            def onOpen(self) -> None:
                seen.append((vars(self)["inside_message"], vars(self)["current_frame"]))

        protocol, _ = self._server(Protocol)
        self.assertEqual((protocol.inside_message, protocol.current_frame), (False, None))
        protocol.dataReceived(handshake(protocols=None))
        self.assertEqual(seen, [(FrameState.inside_message, FrameState.current_frame)])
        protocol.connectionLost(Failure(ConnectionDone()))
