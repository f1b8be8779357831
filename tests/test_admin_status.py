"""
Tests for L{sipcore.admin.status}: the recent closes it keeps, and the status
page in real headless Chromium against a running server: loaded twice with
sipp as the registering client, and left open (driven through Chromium's
DevTools protocol, with autobahn as its WebSocket client) while SIP.js
registers and its connection closes.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import shutil
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody

from sipcore.admin.status import RecentCloses
from sipcore.testing import connectionEvent
from tests.peerhelpers import (
    peersRequired,
    sippFinished,
    startNode,
    startSipp,
    waitRegistered,
)
from tests.serverhelpers import PATIENCE, portOf, startServer, waitUntil


class RecentClosesTests(SynchronousTestCase):
    """
    L{RecentCloses} keeps the last close events, newest first.
    """

    def test_keepsNewestFirst(self) -> None:
        """
        Past its size the oldest go; each kept close names its event,
        connection, peer and reason.
        """
        closes = RecentCloses(size=2)
        for conid in (1, 2, 3):
            closes.handle(connectionEvent("tcp:closed", conid=conid, reason="peer closed",
                                          duration=1.5))
        recent = closes.recent()
        self.assertEqual([c["conid"] for c in recent], [3, 2])
        self.assertEqual((recent[0]["event"], recent[0]["reason"], recent[0]["duration"]),
                         ("tcp:closed", "peer closed", 1.5))

    def test_events(self) -> None:
        """
        It subscribes to every close event, WebSocket ones included.
        """
        self.assertEqual(set(RecentCloses.events),
                         {"tcp:closed", "tcp:reset", "tcp:timeout", "websocket:closed"})


class _Output(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.out = bytearray()
        self.ended: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        pass

    def processEnded(self, reason: Failure) -> None:  # type: ignore[override]
        self.ended.callback(None)


def chromiumPath() -> str:
    """
    @return: Debian's C{chromium}; the test skips without it (fails with
        C{SIPCORE_REQUIRE_PEERS=1}).
    """
    path = shutil.which("chromium")
    if path is None:
        if peersRequired():
            raise AssertionError("chromium is not installed and SIPCORE_REQUIRE_PEERS=1")
        raise SkipTest("chromium is not installed")
    return path


async def dumpDOM(testCase: TestCase, url: str, budget: int = 5000) -> str:
    """
    Load C{url} in headless Chromium, let its scripts run for C{budget}
    milliseconds of virtual time, and return the DOM then.
    """
    profile = os.path.abspath(testCase.mktemp())
    args = [chromiumPath(), "--headless", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--user-data-dir=" + profile,
            "--virtual-time-budget={}".format(budget), "--dump-dom", url]
    output = _Output()
    transport = reactor.spawnProcess(output, args[0], args, env=dict(os.environ))
    timer = reactor.callLater(60, transport.signalProcess, "KILL")
    try:
        await output.ended
    finally:
        if timer.active():
            timer.cancel()
    return output.out.decode("utf-8", "replace")


def tableRows(dom: str, table: str) -> str:
    """
    The C{<tbody>} of the table with id C{table} in a dumped DOM.
    """
    start = dom.index('<table id="{}">'.format(table))
    body = dom.index("<tbody>", start)
    return dom[body:dom.index("</tbody>", body)]


class StatusPageBrowserTests(TestCase):
    """
    The status page in headless Chromium shows a sipp registration over
    TCP and its connection, and after the connection drops, neither, with
    the close among the recent closes.
    """

    timeout = 180

    async def test_registrationComesAndGoes(self) -> None:
        """
        Registered: the AoR is in the registrations and connections tables,
        and the page refreshed more than once.  Connection dropped (sipp
        killed): the AoR is gone from both and the close is listed.
        """
        chromiumPath()
        service = await startServer(self, "--admin-listen", "tcp:0:interface=127.0.0.1",
                                    transports=("tcp",))
        url = "http://127.0.0.1:{}/status".format(
            portOf(service.getServiceNamed("admin").listeningPort))
        user = "erin" + secrets.token_hex(3)
        aor = user + "@example.com"
        sipp = startSipp(self, "uas.xml", "tcp", service.ports["tcp"], user, "status-" + user)
        await waitRegistered(service, aor)
        [conid] = [flow.conid for flow in service.table]

        dom = await dumpDOM(self, url)
        self.assertIn(aor, tableRows(dom, "registrations"), dom)
        self.assertIn(aor, tableRows(dom, "connections"))
        self.assertIn("<td>location-cleanup</td><td>ok</td>", tableRows(dom, "queues"))
        refreshes: Any = dom.split('data-refreshes="', 1)[1].split('"', 1)[0]
        self.assertGreater(int(refreshes), 1)

        sipp.kill()
        await sippFinished(sipp)

        async def gone() -> bool:
            return not await service.store.lookup(aor, reactor.seconds())

        await waitUntil(gone, what="bindings of the dropped connection removed")
        dom = await dumpDOM(self, url)
        self.assertNotIn(aor, tableRows(dom, "registrations"))
        self.assertNotIn(aor, tableRows(dom, "connections"))
        closes = tableRows(dom, "closes")
        self.assertIn("<td>{}</td><td>tcp</td>".format(conid), closes)


class _Browser(protocol.ProcessProtocol):
    """
    A headless Chromium with remote debugging: its standard error (where
    it says on which port DevTools listens) and its end.
    """

    def __init__(self) -> None:
        self.err = bytearray()
        self.ended: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        pass

    def errReceived(self, data: bytes) -> None:
        if len(self.err) < 200000:
            self.err += data

    def processEnded(self, reason: Failure) -> None:  # type: ignore[override]
        self.ended.callback(None)

    def devToolsPort(self) -> int | None:
        match = re.search(rb"DevTools listening on ws://127\.0\.0\.1:(\d+)/", bytes(self.err))
        return int(match.group(1)) if match else None


class _DevTools(WebSocketClientProtocol):
    """
    A client of one page's DevTools WebSocket: L{evaluate} runs an
    expression in the page and fires with its value.
    """

    def __init__(self) -> None:
        super().__init__()
        self.opened: defer.Deferred[None] = defer.Deferred()
        self._ids = itertools.count(1)
        self._waiting: dict[int, defer.Deferred[Any]] = {}

    def onOpen(self) -> None:
        self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = json.loads(payload)
        waiting = self._waiting.pop(message.get("id", 0), None)
        if waiting is not None:
            waiting.callback(message)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        waiting, self._waiting = self._waiting, {}
        for d in waiting.values():
            d.errback(ConnectionError("DevTools closed: {} {}".format(code, reason)))

    async def evaluate(self, expression: str) -> Any:
        number = next(self._ids)
        d: defer.Deferred[Any] = defer.Deferred()
        self._waiting[number] = d
        self.sendMessage(json.dumps({"id": number, "method": "Runtime.evaluate", "params": {
            "expression": expression, "returnByValue": True}}).encode())
        timer = reactor.callLater(PATIENCE, d.cancel)
        try:
            answer = await d
        finally:
            if timer.active():
                timer.cancel()
        return answer["result"]["result"].get("value")


async def openPage(testCase: TestCase, url: str) -> _DevTools:
    """
    Start headless Chromium on C{url} with remote debugging on an ephemeral
    loopback port (killed and waited for at cleanup), and connect to the
    page's DevTools WebSocket.
    """
    profile = os.path.abspath(testCase.mktemp())
    args = [chromiumPath(), "--headless", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--user-data-dir=" + profile,
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", url]
    browser = _Browser()
    transport = reactor.spawnProcess(browser, args[0], args, env=dict(os.environ))

    def stop() -> Any:
        if not browser.ended.called:
            transport.signalProcess("KILL")
        return browser.ended

    testCase.addCleanup(stop)
    port = await waitUntil(browser.devToolsPort, timeout=PATIENCE * 3,
                           what="Chromium's DevTools port: " + browser.err.decode(
                               "utf-8", "replace")[-2000:])

    async def pageSocket() -> str | None:
        response = await Agent(reactor).request(
            b"GET", "http://127.0.0.1:{}/json/list".format(port).encode())
        targets = json.loads(await readBody(response))
        pages = [t["webSocketDebuggerUrl"] for t in targets
                 if t.get("type") == "page" and t.get("url") == url]
        return pages[0] if pages else None

    socketUrl = await waitUntil(pageSocket, what="the status page's DevTools target")
    factory = WebSocketClientFactory(socketUrl, reactor=reactor)
    factory.protocol = _DevTools
    devTools = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                                     factory.buildProtocol(None))
    await devTools.opened
    testCase.addCleanup(devTools.dropConnection)
    return devTools


#: The text of the status page's tables and its refresh count.
_PAGE_STATE = """JSON.stringify({
  refreshes: Number(document.getElementById("state").dataset.refreshes),
  marker: window.sipcoreTestMarker || null,
  registrations: document.querySelector("#registrations tbody").innerText,
  connections: document.querySelector("#connections tbody").innerText,
  closes: document.querySelector("#closes tbody").innerText,
})"""


class StatusPageLiveTests(TestCase):
    """
    The status page left open in headless Chromium, never reloaded, shows a
    registration made by SIP.js over WebSocket and then drops it once the
    client's connection has closed.
    """

    timeout = 180

    async def test_liveRefresh(self) -> None:
        """
        Opened before the client registers: the page comes to list the
        AoR in its registrations and connections; after the client exits
        (its WebSocket closes, it does not unregister) the page comes to
        list neither and shows the close; a marker set in the page at the
        start is still there at the end, so the page was never reloaded.
        """
        chromiumPath()
        service = await startServer(self, "--admin-listen", "tcp:0:interface=127.0.0.1",
                                    transports=("ws",))
        url = "http://127.0.0.1:{}/status".format(
            portOf(service.getServiceNamed("admin").listeningPort))
        page = await openPage(self, url)

        async def state() -> dict[str, Any]:
            return dict(json.loads(await page.evaluate(_PAGE_STATE)))

        await waitUntil(lambda: page.evaluate(
            'document.getElementById("state").dataset.refreshes >= 1'),
            what="the page's first refresh")
        await page.evaluate("window.sipcoreTestMarker = 'kept'")
        user = "live" + secrets.token_hex(3)
        aor = user + "@example.com"
        self.assertNotIn(aor, (await state())["registrations"])

        client = startNode(self, "register.mjs", "sipjs",
                           "ws://127.0.0.1:{}".format(service.ports["ws"]), "example.com", user)
        self.assertEqual((await client.event("registered"))["status"], 200)
        [conid] = [flow.conid for flow in service.table]

        async def shown() -> bool:
            now = await state()
            return aor in now["registrations"] and aor in now["connections"]

        await waitUntil(shown, timeout=PATIENCE * 2, what="the registration on the page")
        before = await state()

        client.transport.closeStdin()
        await client.ended
        self.assertEqual(client.named("stopped"), [{"event": "stopped"}])

        async def dropped() -> bool:
            now = await state()
            return aor not in now["registrations"] and aor not in now["connections"]

        await waitUntil(dropped, timeout=PATIENCE * 2, what="the registration gone from the page")
        after = await state()
        self.assertEqual(await service.store.lookup(aor, reactor.seconds()), [])
        self.assertIn("websocket:closed", after["closes"])
        self.assertIn("\t{}\tws\t".format(conid), after["closes"])
        self.assertEqual((before["marker"], after["marker"]), ("kept", "kept"))
        self.assertGreater(after["refreshes"], before["refreshes"])
