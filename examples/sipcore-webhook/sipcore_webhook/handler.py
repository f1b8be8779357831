# -*- test-case-name: sipcore_webhook.test.test_webhook -*-
"""
The C{webhook} handler: each close event becomes one JSON POST.

The POST is best effort: a failed or slow POST is reported by sipcore's
event bus (logged with the handler's name, counted, cancelled after the
plugin's timeout) and is not retried.  Work that must not be lost belongs
in a job queue (C{context.makeJobQueue}), as the connection-audit handler
does.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python import usage
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from sipcore.events import ConnectionEvent
from sipcore.plugin import Handler, HandlerError, handles, number

__all__ = ["Webhook", "WebhookError", "eventDocument"]


class WebhookError(Exception):
    """
    The HTTP server answered a POST with a status other than 2xx.
    """


def eventDocument(event: ConnectionEvent) -> dict[str, Any]:
    """
    The JSON document posted for C{event}.
    """
    return {
        "event": event.name,
        "conid": event.conid,
        "transport": event.transport,
        "local": [event.local[0], event.local[1]],
        "remote": [event.remote[0], event.remote[1]],
        "time": event.time,
        "reason": event.reason,
        "duration": event.duration,
        "wsCode": event.wsCode,
        "wsReason": event.wsReason,
        "serverId": event.serverId,
    }


@implementer(IBodyProducer)
class _BytesProducer:
    """
    A request body held in memory, written at once.
    """

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self._body)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def _checkURL(value: str) -> str:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL, not {!r}".format(value))
    return value


class Webhook(Handler):
    """
    POSTs every close event to C{url}, or logs it when C{url} is empty.

    @ivar posted: POSTs answered with 2xx.
    @ivar agent: the L{Agent} (C{None} without a URL).
    """

    class Options(usage.Options):
        optParameters = [
            ["url", None, "", "where to POST each close event; empty: only log", _checkURL],
            ["timeout", None, 10.0, "seconds to wait for the HTTP server to accept",
             number(minimum=0.001)],
        ]

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self.url: str = self.options["url"]
        self.posted = 0
        self.agent: Agent | None = None
        if self.url:
            try:
                self.agent = Agent(context.reactor, connectTimeout=self.options["timeout"])
            except Exception as e:
                raise HandlerError("handler {!r}: url: {}".format(self.name, e)) from e

    def start(self) -> None:
        if self.agent is None:
            self._log.info("{handler}: no url set, close events are only logged",
                           handler=self.name)
        else:
            self._log.info("{handler}: posting close events", handler=self.name)

    @handles("tcp:closed", "tcp:reset", "tcp:timeout", "websocket:closed")
    def closed(self, event: ConnectionEvent) -> Deferred[None] | None:
        """
        POST the event (or log it).

        @return: a L{Deferred} that fires when the server answered 2xx, and
            fails with L{WebhookError} on another status or with the
            connection error; C{None} when only logging.
        """
        document = eventDocument(event)
        if self.agent is None:
            self._log.info("{handler}: {document}", handler=self.name,
                           document=json.dumps(document, sort_keys=True))
            return None
        return Deferred.fromCoroutine(self._post(json.dumps(document).encode("utf-8")))

    async def _post(self, body: bytes) -> None:
        assert self.agent is not None
        headers = Headers(
            {
                b"Content-Type": [b"application/json"],
                b"User-Agent": [b"sipcore-webhook/1.0"],
            }
        )
        response = await self.agent.request(
            b"POST", self.url.encode("utf-8"), headers, _BytesProducer(body)
        )
        await readBody(response)
        if not 200 <= response.code < 300:
            raise WebhookError("the webhook answered HTTP {}".format(response.code))
        self.posted += 1
