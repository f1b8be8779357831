"""
Tests for L{sipcore.admin.status}: the recent closes it keeps, and the status
page in real headless Chromium against a running server, with sipp as the
registering client.
"""

from __future__ import annotations

import os
import secrets
import shutil
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from sipcore.admin.status import RecentCloses
from sipcore.testing import connectionEvent
from tests.peerhelpers import peersRequired, sippFinished, startSipp, waitRegistered
from tests.serverhelpers import portOf, startServer, waitUntil


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
