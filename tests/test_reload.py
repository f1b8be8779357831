"""
Tests for L{sipcore.reload} (what C{SIGHUP} reloads) and
L{sipcore.transport.tls.ReloadableTLS}.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL
from psycopg2 import sql
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import LogLevel, formatEvent
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from sipcore.message import Request, Response, parseMessage
from sipcore.reload import ReloadService
from sipcore.routes import USER, Caller, RouteTargets, RoutingRequest
from sipcore.sip.auth import CredentialFile
from sipcore.tap import Options, buildService
from sipcore.testing import LogCapture, UDPMemoryReactor
from sipcore.transport.tls import ReloadableTLS
from tests.dbhelpers import createTestSchema
from tests.serverhelpers import (
    PATIENCE,
    SIPCORE_PATH,
    connectTCP,
    optionsRequest,
    registerRequest,
    spawnChild,
    waitUntil,
)
from tests.test_auth import credentials
from tests.test_proxy import sipRequest
from tests.test_security_guessing import digestChallenge
from tests.test_transport_support import makeCertificate


@implementer(IReactorFromThreads)
class ThreadCalls:
    """
    A reactor's C{callFromThread} that records what it is asked to call.
    """

    def __init__(self) -> None:
        self.scheduled: list[tuple[Any, tuple[object, ...]]] = []

    def callFromThread(self, callable: Callable[..., Any], *args: object,
                       **kwargs: object) -> None:
        self.scheduled.append((callable, args))


def subjectOf(tls: ReloadableTLS) -> str:
    """
    The common name of the certificate a new connection would get.
    """
    server = SSL.Connection(tls.getContext(), None)
    certificate = server.get_certificate()
    assert certificate is not None
    return str(certificate.get_subject().CN)


class ReloadableTLSTests(SynchronousTestCase):
    """
    L{ReloadableTLS} serves new connections the certificate read last.
    """

    def test_reload(self) -> None:
        """
        After the files change, L{ReloadableTLS.reload} makes new contexts
        carry the new certificate; a broken file keeps the previous one.
        """
        directory = FilePath(self.mktemp())
        key, cert = makeCertificate(directory, "first")
        tls = ReloadableTLS(key, cert)
        self.assertEqual((tls.subject, subjectOf(tls)), ("first", "first"))
        makeCertificate(directory, "second")
        self.assertEqual(subjectOf(tls), "first")
        self.assertEqual(tls.reload(), "second")
        self.assertEqual(subjectOf(tls), "second")
        FilePath(cert).setContent(b"not a certificate")
        self.assertRaises(ValueError, tls.reload)
        FilePath(cert).remove()
        e = self.assertRaises(ValueError, tls.reload)
        self.assertIn("cannot read", str(e))
        self.assertEqual(subjectOf(tls), "second")

    def test_mismatch(self) -> None:
        """
        A key that is not the certificate's is refused.
        """
        key, _ = makeCertificate(FilePath(self.mktemp()), "a")
        _, cert = makeCertificate(FilePath(self.mktemp()), "b")
        self.assertRaises(ValueError, ReloadableTLS, key, cert)


class ReloadServiceTests(SynchronousTestCase):
    """
    L{ReloadService} reloads its parts and says so in one line.
    """

    def test_oneLine(self) -> None:
        """
        Every part is reloaded, in order, and one line names what each
        read; a failing part makes it a warning and the others still run.
        """
        calls: list[str] = []

        def fails() -> str:
            calls.append("b")
            raise ValueError("bad line 3")

        def works(name: str) -> Any:
            def reload() -> str:
                calls.append(name)
                return "ok"
            return reload

        service = ReloadService(ThreadCalls(), [("a", works("a")), ("b", fails),
                                                ("c", works("c"))])
        capture = LogCapture(self, "sipcore.reload")
        self.assertEqual(service.reload("SIGHUP"),
                         {"a": "ok", "b": "failed: bad line 3", "c": "ok"})
        self.assertEqual(calls, ["a", "b", "c"])
        self.assertEqual([formatEvent(e) for e in capture.at(LogLevel.warn)],
                         ["SIGHUP: reloaded a ok; b failed: bad line 3; c ok"])
        self.assertEqual(capture.at(LogLevel.info), [])

    def test_nothingToReload(self) -> None:
        """
        A part that returns C{None} (the log file when logging to standard
        output) is left out of the answer and of the line.
        """
        service = ReloadService(ThreadCalls(), [("log file", lambda: None),
                                                ("c", lambda: "ok")])
        capture = LogCapture(self, "sipcore.reload")
        self.assertEqual(service.reload("SIGHUP"), {"c": "ok"})
        self.assertEqual([formatEvent(e) for e in capture.at(LogLevel.info)],
                         ["SIGHUP: reloaded c ok"])

    def test_signalHandler(self) -> None:
        """
        Made with C{installSignal}, the running service answers C{SIGHUP}
        by scheduling a reload in the reactor thread, and puts the previous
        handler back when it stops.
        """
        previous = signal.getsignal(signal.SIGHUP)
        reactor = ThreadCalls()
        service = ReloadService(reactor, [], installSignal=True)
        service.startService()
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        handler = signal.getsignal(signal.SIGHUP)
        self.assertNotEqual(handler, previous)
        assert callable(handler)
        handler(signal.SIGHUP, None)
        self.assertEqual(reactor.scheduled, [(service.reload, ("SIGHUP",))])
        service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)

    def test_serverParts(self) -> None:
        """
        A server with C{--auth-file} and a TLS listener reloads the
        credential file and the certificate; without C{signals} it leaves
        the process's C{SIGHUP} handler alone.
        """
        directory = FilePath(self.mktemp())
        key, cert = makeCertificate(directory)
        users = directory.child("users")
        users.setContent(b"alice@localhost:one\n")
        options = Options()
        options.parseOptions(["--auth-file", users.path, "--listen", "udp:0",
                              "--listen", "tls:0:privateKey={}:certKey={}".format(key, cert)])
        previous = signal.getsignal(signal.SIGHUP)
        service = buildService(options, UDPMemoryReactor())
        service.reloader.startService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)
        users.setContent(b"alice@localhost:one\nbob@localhost:two\n")
        self.assertEqual(service.reloader.reload(), {
            "credentials": "{} (2 users)".format(users.path),
            "certificate of ssl:0": "(localhost)"})


    def test_routes(self) -> None:
        """
        A server with the C{routes} handler reloads its routes file: the
        proxy's router routes by the new file; a bad file is a warning
        line saying why, and the routes in use stay.
        """
        directory = FilePath(self.mktemp())
        directory.makedirs()
        routes = directory.child("routes")
        routes.setContent(b"default - sip:192.0.2.1\n")
        options = Options()
        options.parseOptions(["--listen", "udp:0", "--handler", "routes",
                              "--handler-option", "routes:file=" + routes.path,
                              "--router", "routes"])
        service = buildService(options, UDPMemoryReactor())
        [(_, router)] = service.proxy.routers.routers

        def firstHop(uri: str) -> str:
            request = parseMessage(sipRequest("INVITE", uri=uri))
            assert isinstance(request, Request)
            routed = router.route(RoutingRequest(
                request, request.uri, Caller(USER, "127.0.0.1", "alice@localhost"), True))
            assert isinstance(routed, RouteTargets)
            return str(routed.targets[0].nextHop)

        routes.setContent(b"default - sip:192.0.2.1\nprefix 9 sip:192.0.2.9\n")
        self.assertEqual(service.reloader.reload("SIGHUP"), {
            "handler routes": "(2 routes from {})".format(routes.path)})
        self.assertEqual(firstHop("sip:900@localhost"), "sip:192.0.2.9")
        routes.setContent(b"prefix 9 sip:192.0.2.9 colour=blue\n")
        capture = LogCapture(self, "sipcore.reload")
        results = service.reloader.reload("SIGHUP")
        self.assertEqual(list(results), ["handler routes"])
        self.assertTrue(results["handler routes"].startswith(
            "failed: {} line 1: unknown option(s) colour".format(routes.path)),
            results["handler routes"])
        [line] = [formatEvent(e) for e in capture.at(LogLevel.warn)]
        self.assertEqual(line, "SIGHUP: reloaded handler routes " + results["handler routes"])
        self.assertEqual(firstHop("sip:900@localhost"), "sip:192.0.2.9")
        self.assertEqual(firstHop("sip:100@localhost"), "sip:192.0.2.1")


class CredentialFileTests(SynchronousTestCase):
    """
    L{CredentialFile} reads its file again on reload.
    """

    def test_reload(self) -> None:
        """
        Lookups see the file's new content after L{CredentialFile.reload};
        a malformed file keeps the previous subscribers.
        """
        path = FilePath(self.mktemp())
        path.setContent(b"alice@example.com:one\n")
        source = CredentialFile(path.path)
        self.assertIsNone(self.successResultOf(source.lookup("bob", "example.com")))
        path.setContent(b"bob@example.com:two\n")
        self.assertEqual(source.reload(), 1)
        self.assertIsNotNone(self.successResultOf(source.lookup("bob", "example.com")))
        self.assertIsNone(self.successResultOf(source.lookup("alice", "example.com")))
        path.setContent(b"no colon here\n")
        self.assertRaises(ValueError, source.reload)
        self.assertIsNotNone(self.successResultOf(source.lookup("bob", "example.com")))


class SignalTests(TestCase):
    """
    C{twistd -n sipcore} in a child process: C{SIGHUP} reloads without
    dropping connections, C{SIGTERM} stops in order.
    """

    timeout = 90

    async def register(self, client: Any, user: str, password: str) -> Response:
        challenge = digestChallenge(await client.request(registerRequest("tcp", user)))
        request = registerRequest("tcp", user).replace(
            b"\r\nContent-Length", "\r\nAuthorization: {}\r\nContent-Length".format(
                credentials(challenge, user=user, password=password)).encode(), 1)
        response: Response = await client.request(request)
        return response

    async def test_hangUpReloadsTermStops(self) -> None:
        """
        A TCP client registers; the credential file, the certificate and
        the routes file change; after C{SIGHUP} the server logs one line
        naming all three, the
        client's connection still works, a user added to the file
        registers over it and a changed password counts.  C{SIGTERM} then
        stops the server in order: the connection closes and the
        connection-bound bindings are deleted from the database.
        """
        schema = await createTestSchema(self)
        directory = FilePath(self.mktemp())
        key, cert = makeCertificate(directory, "before")
        users = directory.child("users")
        users.setContent(b"alice@example.com:old-password\n")
        routes = directory.child("routes")
        routes.setContent(b"default - sip:192.0.2.1\n")
        env = dict(os.environ, PYTHONPATH=SIPCORE_PATH)
        args = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "sipcore", "--domain", "example.com",
                "--db", schema.dsn, "--server-id", "5", "--auth-file", users.path,
                "--handler", "routes", "--handler-option", "routes:file=" + routes.path,
                "--router", "routes",
                "--admin-listen", "none",
                "--listen", "tcp:0:interface=127.0.0.1",
                "--listen", "tls:0:interface=127.0.0.1:privateKey={}:certKey={}".format(
                    key, cert)]
        proc, transport = spawnChild(self, args, env)
        pattern = re.compile(r"listening on tcp 127\.0\.0\.1:(\d+)")
        await waitUntil(lambda: pattern.search(proc.output), timeout=PATIENCE * 2,
                        what="the TCP listener: " + proc.output[-500:])
        match = pattern.search(proc.output)
        assert match is not None
        client = await connectTCP(int(match.group(1)))
        self.assertEqual((await self.register(client, "alice", "old-password")).status, 200)

        users.setContent(b"alice@example.com:new-password\ncarol@example.com:carols\n")
        makeCertificate(directory, "after")
        routes.setContent(b"default - sip:192.0.2.1\nprefix 9 sip:192.0.2.9\n")
        os.kill(transport.pid, signal.SIGHUP)
        await waitUntil(lambda: "SIGHUP: reloaded" in proc.output, what="the reload line")
        line = next(text for text in proc.output.splitlines() if "SIGHUP: reloaded" in text)
        self.assertIn("credentials {} (2 users)".format(users.path), line)
        self.assertIn("(after)", line)
        self.assertIn("handler routes (2 routes from {})".format(routes.path), line)
        self.assertEqual((await client.request(optionsRequest("tcp"))).status, 200)
        self.assertEqual((await self.register(client, "carol", "carols")).status, 200)
        self.assertEqual((await self.register(client, "alice", "old-password")).status, 401)
        self.assertEqual((await self.register(client, "alice", "new-password")).status, 200)

        table = sql.Identifier(schema.name, "location")
        query = sql.SQL("SELECT username FROM {} WHERE server_id = 5 AND connection_id > 0"
                        ).format(table)
        self.assertEqual(sorted(row[0] for row in await schema.admin.runQuery(query)),
                         ["alice", "carol"])
        os.kill(transport.pid, signal.SIGTERM)
        await proc.ended
        await client.waiters.lost
        self.assertEqual(proc.signal, signal.SIGTERM, proc.output[-3000:])
        self.assertIn("stopped cleanly", proc.output, proc.output[-3000:])
        self.assertNotIn("Traceback", proc.output)
        self.assertEqual(list(await schema.admin.runQuery(query)), [])


class LogFileReopenTests(TestCase):
    """
    C{twistd -n --logfile FILE sipcore} in a child process: after the file
    is renamed (as logrotate does), C{SIGHUP} reopens it at its path.
    """

    timeout = 90

    async def test_renamedThenHangUp(self) -> None:
        """
        A TCP client registers; the log file is renamed and the server gets
        C{SIGHUP}: the reload line, saying the log file was reopened, and
        every later line (the next registration, the shutdown) go to a new
        file at the path, none to the renamed one; the client's connection
        stays up and answers.
        """
        directory = FilePath(self.mktemp())
        directory.makedirs()
        log = directory.child("sipcore.log")
        rotated = directory.child("sipcore.log.1")
        env = dict(os.environ, PYTHONPATH=SIPCORE_PATH)
        args = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "--logfile", log.path, "sipcore",
                "--domain", "example.com", "--admin-listen", "none", "--log-events",
                "--listen", "tcp:0:interface=127.0.0.1"]
        proc, transport = spawnChild(self, args, env)

        def text(path: FilePath[str]) -> str:
            return path.getContent().decode("utf-8") if path.exists() else ""

        pattern = re.compile(r"listening on tcp 127\.0\.0\.1:(\d+)")
        await waitUntil(lambda: pattern.search(text(log)), timeout=PATIENCE * 2,
                        what="the TCP listener: " + proc.output[-500:])
        match = pattern.search(text(log))
        assert match is not None
        client = await connectTCP(int(match.group(1)))
        response = await client.request(registerRequest("tcp", "alice"))
        self.assertEqual(response.status, 200)

        log.moveTo(rotated)
        os.kill(transport.pid, signal.SIGHUP)
        await waitUntil(lambda: "SIGHUP: reloaded" in text(log), what="the reload line")
        self.assertIn("SIGHUP: reloaded log file {} reopened".format(log.path), text(log))
        self.assertEqual((await client.request(optionsRequest("tcp"))).status, 200)
        self.assertEqual(
            (await client.request(registerRequest("tcp", "bob", callId="bob-1"))).status, 200)
        self.assertFalse(client.waiters.lost.called)

        os.kill(transport.pid, signal.SIGTERM)
        await proc.ended
        await client.waiters.lost
        new = text(log)
        self.assertIn("registration added: bob@example.com", new)
        self.assertIn("stopped cleanly", new)
        self.assertNotIn("registration added: alice@example.com", new)
        old = text(rotated)
        self.assertIn("listening on tcp", old)
        self.assertIn("registration added: alice@example.com", old)
        self.assertNotIn("bob@example.com", old)
        self.assertNotIn("SIGHUP", old)
        self.assertNotIn("stopped cleanly", old)
        self.assertNotIn("Traceback", old + text(log))
