# -*- test-case-name: sipcore_webhook.test.test_webhook -*-
"""
Tests for the webhook handler, with sipcore's public fakes
(L{sipcore.testing}) and Twisted's (no sockets, no real time).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.plugins.sipcore_webhook_plugin import webhook as plugin
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from zope.interface.verify import verifyObject

from sipcore.events import TCP_CLOSED, TCP_CONNECTED, WEBSOCKET_CLOSED
from sipcore.events.discovery import findHandlers
from sipcore.interfaces import IHandlerPlugin
from sipcore.plugin import HandlerContext, OptionError, parseOptions
from sipcore.testing import MemoryLocationStore, connectionEvent
from sipcore_webhook.handler import Webhook, WebhookError


class FakeResponse:
    """
    An HTTP response with a status code and a body.
    """

    def __init__(self, code: int, body: bytes = b"") -> None:
        self.code = code
        self.phrase = b"OK" if code < 300 else b"Error"
        self.body = body

    def deliverBody(self, protocol: Any) -> None:
        protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


class FakeAgent:
    """
    Records requests; the test answers them.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, bytes, Any, bytes, Deferred[Any]]] = []

    def request(self, method: bytes, uri: bytes, headers: Any, body: Any) -> Deferred[Any]:
        consumer = StringTransport()
        body.startProducing(consumer)
        d: Deferred[Any] = Deferred()
        self.requests.append((method, uri, headers, consumer.value(), d))
        return d


def makeWebhook(**options: str) -> Webhook:
    """
    A webhook made by its plugin, its options parsed as sipcore parses
    C{--handler-option webhook:KEY=VALUE}.
    """
    clock = MemoryReactorClock()
    context = HandlerContext(
        serverId=3,
        reactor=clock,
        store=MemoryLocationStore(clock),
        options=parseOptions(plugin, options),
        handlerName="webhook",
    )
    webhook = plugin.makeHandler(context)
    assert isinstance(webhook, Webhook)
    return webhook


class PluginTests(SynchronousTestCase):
    """
    The plugin is installed where twisted.plugin finds it.
    """

    def test_discovered(self) -> None:
        """
        C{findHandlers} finds C{webhook}, which provides L{IHandlerPlugin}
        and subscribes to the close events.
        """
        found = findHandlers()
        self.assertIn("webhook", found, found.problems)
        webhook = found["webhook"]
        self.assertTrue(verifyObject(IHandlerPlugin, webhook))
        self.assertEqual(
            webhook.events, ("tcp:closed", "tcp:reset", "tcp:timeout", "websocket:closed")
        )


class WebhookTests(SynchronousTestCase):
    """
    The handler posts each close event, or logs it without a URL.
    """

    def test_posts(self) -> None:
        """
        A close event is POSTed as JSON; the Deferred fires when the server
        answers 2xx.
        """
        webhook = makeWebhook(url="http://127.0.0.1:8000/hook")
        webhook.agent = agent = FakeAgent()  # type: ignore[assignment]
        d = webhook.handle(
            connectionEvent(WEBSOCKET_CLOSED, conid=5, transport="ws", wsCode=1000, wsReason="bye")
        )
        [(method, uri, headers, body, answer)] = agent.requests
        self.assertEqual((method, uri), (b"POST", b"http://127.0.0.1:8000/hook"))
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        document = json.loads(body)
        self.assertEqual(
            (document["event"], document["conid"], document["wsCode"], document["wsReason"]),
            (WEBSOCKET_CLOSED, 5, 1000, "bye"),
        )
        self.assertNoResult(d)
        answer.callback(FakeResponse(204))
        self.successResultOf(d)
        self.assertEqual(webhook.posted, 1)

    def test_errorStatus(self) -> None:
        """
        Another status fails the Deferred with L{WebhookError}.
        """
        webhook = makeWebhook(url="http://127.0.0.1:8000/hook")
        webhook.agent = agent = FakeAgent()  # type: ignore[assignment]
        d = webhook.handle(connectionEvent(TCP_CLOSED))
        agent.requests[0][4].callback(FakeResponse(500, b"oops"))
        self.failureResultOf(d, WebhookError)
        self.assertEqual(webhook.posted, 0)

    def test_otherEventsIgnored(self) -> None:
        """
        An event the handler has no method for is ignored.
        """
        webhook = makeWebhook(url="http://127.0.0.1:8000/hook")
        webhook.agent = agent = FakeAgent()  # type: ignore[assignment]
        self.assertIsNone(webhook.handle(connectionEvent(TCP_CONNECTED)))
        self.assertEqual(agent.requests, [])

    def test_onlyLogsWithoutURL(self) -> None:
        """
        Without a URL the handler only logs the event.
        """
        webhook = makeWebhook()
        self.assertIsNone(webhook.agent)
        self.assertIsNone(webhook.handle(connectionEvent(TCP_CLOSED)))

    def test_badOptions(self) -> None:
        """
        A URL that is not http(s) and an unknown option are refused.
        """
        e = self.assertRaises(OptionError, makeWebhook, url="ftp://x")
        self.assertIn("must be an http:// or https:// URL, not 'ftp://x'", str(e))
        e = self.assertRaises(OptionError, makeWebhook, uri="http://x")
        self.assertIn("unknown option 'uri'", str(e))
