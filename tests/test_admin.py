"""
Tests for L{sipcore.admin}: the settings (loopback or a token), the admin API
and its health checks against a running server with real clients on
loopback, the C{sipcore} admin commands in a child process, and the systemd
readiness notice.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from zope.interface import provider
from zope.interface.verify import verifyObject

from sipcore.admin import (
    DEFAULT_LISTEN,
    TOKEN_ENVIRONMENT,
    AdminSettingsError,
    adminSettings,
    isLoopbackEndpoint,
)
from sipcore.admin.client import DEFAULT_URL, table
from sipcore.admin.service import SystemdNotify, readyChecks
from sipcore.interfaces import IBindingListing
from sipcore.jobs import JobQueue
from sipcore.location import MemoryLocationStore
from sipcore.tap import Options, buildService
from sipcore.testing import UDPMemoryReactor
from tests.peerhelpers import startSipp, waitRegistered
from tests.serverhelpers import (
    SIPCORE_PATH,
    connectTCP,
    portOf,
    registerRequest,
    spawnChild,
    startServer,
    waitUntil,
)


class SettingsTests(SynchronousTestCase):
    """
    L{adminSettings} and C{--admin-listen}: a token is required beyond
    loopback.
    """

    def test_loopback(self) -> None:
        """
        Endpoints on a loopback interface or a UNIX socket are loopback;
        one without an interface, or on another address, is not.
        """
        self.assertTrue(isLoopbackEndpoint("tcp:8079:interface=127.0.0.1"))
        self.assertTrue(isLoopbackEndpoint("tcp6:8079:interface=\\:\\:1"))
        self.assertTrue(isLoopbackEndpoint("unix:/run/sipcore/admin.sock"))
        self.assertFalse(isLoopbackEndpoint("tcp:8079"))
        self.assertFalse(isLoopbackEndpoint("tcp:8079:interface=0.0.0.0"))
        self.assertFalse(isLoopbackEndpoint("tcp6:8079:interface=\\:\\:"))
        self.assertFalse(isLoopbackEndpoint("tcp:8079:interface=192.0.2.1"))

    def test_beyondLoopbackNeedsToken(self) -> None:
        """
        Without a token, an endpoint beyond loopback is refused, naming the
        options that give one.
        """
        with self.assertRaises(AdminSettingsError) as caught:
            adminSettings("tcp:8079", environ={})
        self.assertIn("--admin-token-file", str(caught.exception))
        self.assertIn(TOKEN_ENVIRONMENT, str(caught.exception))

    def test_tokenFromEnvironment(self) -> None:
        """
        C{SIPCORE_ADMIN_TOKEN} gives the token; its repr does not show it.
        """
        settings = adminSettings("tcp:8079", environ={TOKEN_ENVIRONMENT: " s3cret\n"})
        self.assertEqual(settings.token, "s3cret")
        self.assertNotIn("s3cret", repr(settings))

    def test_tokenFile(self) -> None:
        """
        C{--admin-token-file} gives the token (surrounding space removed)
        and wins over the environment; an empty or missing file is an error.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("from-file\n")
        settings = adminSettings("tcp:8079", path, environ={TOKEN_ENVIRONMENT: "env"})
        self.assertEqual(settings.token, "from-file")
        with open(path, "w") as f:
            f.write("  \n")
        self.assertRaises(AdminSettingsError, adminSettings, "tcp:8079", path, environ={})
        self.assertRaises(AdminSettingsError, adminSettings, "tcp:8079", path + ".missing",
                          environ={})

    def test_optionsRefuse(self) -> None:
        """
        C{twistd sipcore --admin-listen} beyond loopback without a token, or
        with a bad endpoint, is a usage error; on loopback it is accepted,
        and without the option the API is off.
        """
        self.patch(os, "environ", {})
        self.assertRaises(usage.UsageError, Options().parseOptions, ["--admin-listen", "tcp:0"])
        self.assertRaises(usage.UsageError, Options().parseOptions,
                          ["--admin-listen", "nonsense:1"])
        options = Options()
        options.parseOptions(["--admin-listen", "tcp:0:interface=127.0.0.1"])
        self.assertEqual(options["admin"].listen, "tcp:0:interface=127.0.0.1")
        self.assertTrue(options["admin"].required)

    def test_defaultAndOff(self) -> None:
        """
        Without C{--admin-listen} the API listens on loopback port 8060, not
        required (a taken port does not stop the server); C{--admin-listen
        none} turns it off.
        """
        self.patch(os, "environ", {})
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["admin"].listen, "tcp:8060:interface=127.0.0.1")
        self.assertEqual(options["admin"].listen, DEFAULT_LISTEN)
        self.assertFalse(options["admin"].required)
        options = Options()
        options.parseOptions(["--admin-listen", "none"])
        self.assertEqual(options["admin"].listen, "")
        self.assertIsNone(options["admin"].token)

    def test_clientDefault(self) -> None:
        """
        The command line's default URL is the server's default endpoint.
        """
        memory = MemoryReactor()
        serverFromString(memory, DEFAULT_LISTEN).listen(Factory())
        [(port, _, _, interface)] = memory.tcpServers
        self.assertEqual(DEFAULT_URL, "http://{}:{}".format(interface, port))

    def test_listingProvided(self) -> None:
        """
        The memory store provides L{IBindingListing}.
        """
        verifyObject(IBindingListing, MemoryLocationStore())

    def test_table(self) -> None:
        """
        L{table} pads each column to its widest cell and shows C{None} as
        C{-}.
        """
        self.assertEqual(table(["A", "BB"], [["xyz", None], [1, 2]]),
                         "A    BB\nxyz  -\n1    2\n")


class _TakenPorts(UDPMemoryReactor):
    """
    A memory reactor on which TCP port 8060 and 8061 are taken by some other
    process.
    """

    def listenTCP(self, port: int, factory: Any, backlog: int = 50,
                  interface: str = "") -> Any:
        if port in (8060, 8061):
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        return super().listenTCP(port, factory, backlog, interface)


class AdminBindTests(SynchronousTestCase):
    """
    When the admin API's endpoint cannot listen: the default one is skipped
    with one warning, one given with C{--admin-listen} stops the start.
    """

    def test_defaultTaken(self) -> None:
        """
        The default port taken: the server starts without the admin API and
        logs one warning naming the endpoint and how to choose another.
        """
        events: list[LogEvent] = []

        @provider(ILogObserver)
        def observer(event: LogEvent) -> None:
            events.append(event)

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.patch(os, "environ", {})
        options = Options()
        options.parseOptions(["--listen", "udp:0"])
        service = buildService(options, _TakenPorts())
        self.successResultOf(service.startService())
        self.assertIsNone(service.startFailure)
        self.assertIsNone(service.getServiceNamed("admin").listeningPort)
        warnings = [formatEvent(e) for e in events
                    if e["log_level"] == LogLevel.warn and "admin" in formatEvent(e)]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("admin API off: cannot listen on its default "
                      "tcp:8060:interface=127.0.0.1", warnings[0])
        self.assertIn("--admin-listen none", warnings[0])
        self.successResultOf(service.stopService())

    def test_givenTaken(self) -> None:
        """
        A port given with C{--admin-listen} and taken fails the start with
        L{CannotListenError}.
        """
        self.patch(os, "environ", {})
        options = Options()
        options.parseOptions(["--listen", "udp:0", "--admin-listen",
                              "tcp:8061:interface=127.0.0.1"])
        reactor = _TakenPorts()
        service = buildService(options, reactor)
        service.startService()
        assert service.startFailure is not None
        self.assertTrue(service.startFailure.check(CannotListenError))
        self.assertEqual(len(self.flushLoggedErrors(CannotListenError)), 1)
        # The reactor was not running: it stops once it runs.
        self.assertEqual([f for f, _, _ in reactor.whenRunningHooks], [reactor.stop])
        self.successResultOf(service.stopService())

    def test_defaultListens(self) -> None:
        """
        When the default port is free the API listens on it.
        """
        self.patch(os, "environ", {})
        options = Options()
        options.parseOptions(["--listen", "udp:0"])
        reactor = UDPMemoryReactor()
        service = buildService(options, reactor)
        self.successResultOf(service.startService())
        self.assertEqual([(port, interface) for port, _, _, interface in reactor.tcpServers],
                         [(8060, "127.0.0.1")])
        self.assertIsNotNone(service.getServiceNamed("admin").listeningPort)
        self.successResultOf(service.stopService())


class _Listener:
    def __init__(self, name: str, port: int | None) -> None:
        self.name = name
        self.port = port


class ReadyChecksTests(SynchronousTestCase):
    """
    L{readyChecks}: listening, the database (with one), no job queue full.
    """

    def results(self, checks: Any) -> dict[str, bool]:
        return {name: check()[0] for name, check in checks}

    def test_checks(self) -> None:
        """
        Each check fails for its own cause and passes otherwise.
        """
        clock = Clock()
        queue = JobQueue("q", lambda items: None, clock, maxSize=1)
        listener = _Listener("tcp 5060", None)
        available = [False]
        checks = readyChecks([listener], lambda: available[0], [queue], usesDatabase=True)
        self.assertEqual(self.results(checks),
                         {"listening": False, "database": False, "queues": True})
        listener.port = 5060
        available[0] = True
        self.assertEqual(self.results(checks),
                         {"listening": True, "database": True, "queues": True})
        self.assertTrue(queue.put(1))
        self.assertFalse(queue.put(2))
        self.flushLoggedErrors()
        self.assertEqual(self.results(checks)["queues"], False)
        self.assertEqual(dict(checks)["queues"](), (False, "full: q"))

    def test_noDatabase(self) -> None:
        """
        Without a database there is no database check.
        """
        checks = readyChecks([], lambda: False, [], usesDatabase=False)
        self.assertEqual(self.results(checks), {"listening": True, "queues": True})


class SystemdNotifyTests(TestCase):
    """
    L{SystemdNotify} sends C{READY=1} to C{NOTIFY_SOCKET} when it starts and
    C{STOPPING=1} when it stops, through the C{sdnotify} library.
    """

    def test_notices(self) -> None:
        """
        A real datagram socket at C{NOTIFY_SOCKET} receives both notices.
        """
        import sdnotify

        path = os.path.abspath(self.mktemp())
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        receiver.bind(path)
        receiver.settimeout(5)
        self.patch(os, "environ", dict(os.environ, NOTIFY_SOCKET=path))
        service = SystemdNotify(sdnotify.SystemdNotifier())
        service.startService()
        self.assertEqual(receiver.recv(100), b"READY=1")
        service.stopService()
        self.assertEqual(receiver.recv(100), b"STOPPING=1")


async def _http(method: str, url: str, token: str | None = None) -> tuple[int, Any]:
    headers = Headers()
    if token is not None:
        headers.addRawHeader(b"Authorization", b"Bearer " + token.encode())
    response = await Agent(reactor).request(method.encode(), url.encode(), headers)
    body = await readBody(response)
    return response.code, json.loads(body)


async def _adminServer(testCase: TestCase, *args: str) -> tuple[Any, str]:
    service = await startServer(testCase, "--admin-listen", "tcp:0:interface=127.0.0.1", *args,
                                transports=("udp", "tcp"))
    port = portOf(service.getServiceNamed("admin").listeningPort)
    return service, "http://127.0.0.1:{}".format(port)


class AdminAPITests(TestCase):
    """
    The admin API of a running server, with real clients on loopback.
    """

    timeout = 60

    async def test_registrationsAndConnections(self) -> None:
        """
        A TCP client's registration appears in the registrations list, in
        its AoR and on its connection; closing the connection through the
        API fires its close event, and the bindings go.
        """
        service, base = await _adminServer(self)
        client = await connectTCP(service.ports["tcp"])
        self.addCleanup(client.transport.loseConnection)
        user = "alice" + secrets.token_hex(3)
        response = await client.request(registerRequest("tcp", user,
                                                        localPort=client.localPort))
        self.assertEqual(response.status, 200)
        aor = user + "@example.com"

        code, listed = await _http("GET", base + "/api/registrations?domain=example.com")
        self.assertEqual(code, 200)
        self.assertEqual([r["aor"] for r in listed["registrations"]], [aor])
        code, listed = await _http("GET", base + "/api/registrations?user=nobody")
        self.assertEqual(listed["registrations"], [])
        code, shown = await _http("GET", base + "/api/registrations/" + aor)
        self.assertEqual(code, 200)
        [binding] = shown["bindings"]
        conid = binding["connectionId"]
        self.assertIn(conid, service.table)

        code, connections = await _http("GET", base + "/api/connections?transport=tcp")
        [connection] = connections["connections"]
        self.assertEqual((connection["conid"], connection["transport"], connection["aors"]),
                         (conid, "tcp", [aor]))
        self.assertEqual(connection["remote"], ["127.0.0.1", client.localPort])

        code, closing = await _http("DELETE", base + "/api/connections/{}".format(conid))
        self.assertEqual((code, closing), (202, {"conid": conid, "closing": True}))

        async def gone() -> bool:
            return not await service.store.lookup(aor, reactor.seconds())

        await waitUntil(gone, what="bindings of the closed connection removed")
        self.assertNotIn(conid, service.table)
        code, shown = await _http("GET", base + "/api/registrations/" + aor)
        self.assertEqual(code, 404)
        code, missing = await _http("DELETE", base + "/api/connections/{}".format(conid))
        self.assertEqual(code, 404)
        code, closes = await _http("GET", base + "/api/closes")
        self.assertEqual([(c["conid"], c["transport"]) for c in closes["closes"]],
                         [(conid, "tcp")])

    async def test_removeAor(self) -> None:
        """
        C{DELETE /api/registrations/AOR/RUID} removes one binding and
        C{DELETE /api/registrations/AOR} the rest.
        """
        service, base = await _adminServer(self)
        client = await connectTCP(service.ports["tcp"])
        self.addCleanup(client.reset)
        user = "bob" + secrets.token_hex(3)
        for n in (1, 2):
            response = await client.request(registerRequest(
                "tcp", user, contact="<sip:{}@127.0.0.1:{};transport=tcp>".format(
                    user, 6000 + n), callId="call{}".format(n)))
            self.assertEqual(response.status, 200)
        aor = user + "@example.com"
        bindings = await service.store.lookup(aor, reactor.seconds())
        self.assertEqual(len(bindings), 2)
        code, removed = await _http(
            "DELETE", base + "/api/registrations/{}/{}".format(aor, bindings[0].ruid))
        self.assertEqual((code, removed["removed"]), (200, 1))
        self.assertEqual([b.ruid for b in await service.store.lookup(aor, reactor.seconds())],
                         [bindings[1].ruid])
        code, removed = await _http("DELETE", base + "/api/registrations/" + aor)
        self.assertEqual((code, removed["removed"]), (200, 1))
        self.assertEqual(await service.store.lookup(aor, reactor.seconds()), [])

    async def test_badQuery(self) -> None:
        """
        A bad page or filter gets C{400} with the reason.
        """
        service, base = await _adminServer(self)
        code, answer = await _http("GET", base + "/api/registrations?limit=0")
        self.assertEqual(code, 400)
        self.assertIn("limit", answer["error"])
        code, answer = await _http("GET", base + "/api/registrations?conid=x")
        self.assertEqual(code, 400)

    async def test_handlersStatsReload(self) -> None:
        """
        The handlers, transactions, stats and reload endpoints answer with
        the server's state.
        """
        service, base = await _adminServer(self)
        code, handlers = await _http("GET", base + "/api/handlers")
        self.assertEqual(code, 200)
        self.assertEqual([h["name"] for h in handlers["handlers"]], ["location-cleanup"])
        self.assertEqual([q["name"] for q in handlers["queues"]], ["location-cleanup"])
        self.assertEqual(handlers["queues"][0]["depth"], 0)
        self.assertIsNone(handlers["queues"][0]["lastError"])
        code, transactions = await _http("GET", base + "/api/transactions")
        self.assertIn("serverTransactions", transactions["transactions"])
        self.assertEqual(transactions["limits"]["maxMessageSize"], 65536)
        code, stats = await _http("GET", base + "/api/stats")
        self.assertIn("sipcore_connections_open", {s["name"] for s in stats["stats"]})
        code, reloaded = await _http("POST", base + "/api/reload")
        self.assertEqual((code, reloaded), (200, {"reloaded": {}}))
        self.assertEqual(service.reloader.reloads, 1)

    async def test_health(self) -> None:
        """
        C{/health/live} and C{/health/ready} answer C{200} on a started
        server, without a token.
        """
        service, base = await _adminServer(self)
        self.assertEqual(await _http("GET", base + "/health/live"), (200, {"status": "live"}))
        code, ready = await _http("GET", base + "/health/ready")
        self.assertEqual((code, ready["status"]), (200, "ready"))
        self.assertEqual(set(ready["checks"]), {"listening", "queues"})

    async def test_token(self) -> None:
        """
        With a token, C{/api/} requests without it or with another get
        C{401}; with it C{200}; the health checks need none.
        """
        path = self.mktemp()
        token = secrets.token_hex(16)
        with open(path, "w") as f:
            f.write(token)
        service, base = await _adminServer(self, "--admin-token-file", path)
        self.assertEqual((await _http("GET", base + "/api/handlers"))[0], 401)
        self.assertEqual((await _http("GET", base + "/api/handlers", "wrong"))[0], 401)
        self.assertEqual((await _http("GET", base + "/api/handlers", token))[0], 200)
        self.assertEqual((await _http("GET", base + "/health/live"))[0], 200)


async def _cli(testCase: TestCase, *args: str, env: dict[str, str] | None = None
               ) -> tuple[int | None, str]:
    environment = dict(os.environ, PYTHONPATH=SIPCORE_PATH, **(env or {}))
    proc, _ = spawnChild(testCase, [sys.executable, "-m", "sipcore.cli", *args], environment)
    code = await proc.ended
    return code, proc.output


class CommandLineTests(TestCase):
    """
    The C{sipcore} admin commands, run as a separate process against a
    running server, with sipp as the registering client.
    """

    timeout = 120

    async def test_ulAndConn(self) -> None:
        """
        A sipp client's registration over TCP shows in C{sipcore ul dump},
        C{ul show} and C{conn list}; C{sipcore conn close} drops its
        connection and its binding goes.
        """
        service, base = await _adminServer(self)
        user = "carol" + secrets.token_hex(3)
        aor = user + "@example.com"
        startSipp(self, "uas.xml", "tcp", service.ports["tcp"], user, "admin-" + user)
        await waitRegistered(service, aor)

        code, out = await _cli(self, "ul", "dump", "--admin", base)
        self.assertEqual(code, 0, out)
        self.assertIn(aor, out)
        self.assertIn("sipp-uas", out)
        code, out = await _cli(self, "ul", "show", aor, "--json", "--admin", base)
        self.assertEqual(code, 0, out)
        [binding] = json.loads(out)["bindings"]
        conid = binding["connectionId"]
        code, out = await _cli(self, "conn", "list", "--json", "--admin", base)
        connections = json.loads(out)["connections"]
        self.assertEqual([(c["conid"], c["aors"]) for c in connections], [(conid, [aor])])
        code, out = await _cli(self, "conn", "list", "--admin", base)
        self.assertEqual(out.splitlines()[0].split(),
                         ["CONID", "TRANSPORT", "REMOTE", "LOCAL", "AGE", "AORS"])
        self.assertEqual(out.splitlines()[1].split()[0], str(conid))

        code, out = await _cli(self, "conn", "close", str(conid), "--admin", base)
        self.assertEqual((code, out), (0, "closing connection {}\n".format(conid)))

        async def gone() -> bool:
            return not await service.store.lookup(aor, reactor.seconds())

        await waitUntil(gone, what="bindings of the closed connection removed")
        code, out = await _cli(self, "ul", "show", aor, "--admin", base)
        self.assertEqual(code, 1)
        self.assertIn("404", out)

    async def test_handlersStatsReloadAndRm(self) -> None:
        """
        C{sipcore handlers}, C{stats}, C{reload} and C{ul rm} print their
        tables and lines, with the token from the environment.
        """
        token = secrets.token_hex(8)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(token)
        service, base = await _adminServer(self, "--admin-token-file", path)
        env = {TOKEN_ENVIRONMENT: token, "SIPCORE_ADMIN_URL": base}
        code, out = await _cli(self, "handlers", env=env)
        self.assertEqual(code, 0, out)
        self.assertIn("location-cleanup  ok", out)
        code, out = await _cli(self, "stats", env=env)
        self.assertIn("sipcore_connections_open", out)
        code, out = await _cli(self, "reload", env=env)
        self.assertEqual((code, out), (0, "nothing to reload\n"))
        client = await connectTCP(service.ports["tcp"])
        self.addCleanup(client.reset)
        user = "dave" + secrets.token_hex(3)
        await client.request(registerRequest("tcp", user, localPort=client.localPort))
        code, out = await _cli(self, "ul", "rm", user + "@example.com", env=env)
        self.assertEqual((code, out), (0, "removed 1 bindings of {}@example.com\n".format(user)))
        code, out = await _cli(self, "handlers", env={"SIPCORE_ADMIN_URL": base,
                                                      TOKEN_ENVIRONMENT: "wrong"})
        self.assertEqual(code, 1)
        self.assertIn("401", out)

    async def test_unreachable(self) -> None:
        """
        Without a server, the command says so in one line and exits 1.
        """
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        code, out = await _cli(self, "ul", "dump", "--admin", "http://127.0.0.1:{}".format(port))
        self.assertEqual(code, 1)
        self.assertEqual(len(out.splitlines()), 1)
        self.assertIn("cannot reach the admin API", out)


class TwistdRefusalTests(TestCase):
    """
    C{twistd sipcore} refuses to start with the admin API beyond loopback
    and no token.
    """

    timeout = 60

    async def test_refused(self) -> None:
        """
        It exits non-zero and says a token is needed.
        """
        env = {k: v for k, v in os.environ.items() if k != TOKEN_ENVIRONMENT}
        env["PYTHONPATH"] = SIPCORE_PATH
        proc, _ = spawnChild(self, [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "sipcore", "--listen", "udp:0:interface=127.0.0.1",
            "--admin-listen", "tcp:0"], env)
        code = await proc.ended
        self.assertNotEqual(code, 0)
        self.assertIn("listens beyond loopback", proc.output)

    async def test_givenPortTaken(self) -> None:
        """
        An C{--admin-listen} port that another socket holds stops the
        server: it says it cannot listen there, and exits.
        """
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        env = dict(os.environ, PYTHONPATH=SIPCORE_PATH)
        proc, _ = spawnChild(self, [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "sipcore", "--listen", "udp:0:interface=127.0.0.1",
            "--admin-listen", "tcp:{}:interface=127.0.0.1".format(port)], env)
        await proc.ended
        self.assertIn("cannot listen on tcp:{}:interface=127.0.0.1 for the admin API".format(
            port), proc.output)
        self.assertIn("sipcore failed to start", proc.output)


class NodesTests(TestCase):
    """
    C{GET /api/nodes} and C{sipcore nodes}: the node table of a server
    with C{--db}.
    """

    timeout = 120

    async def test_nodes(self) -> None:
        """
        Two servers on one database: the API of one lists both rows, with
        its own C{server_id}; C{sipcore nodes} prints them as a table,
        marking this node; after the other stops, its row shows dead.
        """
        from tests.dbhelpers import createTestSchema

        schema = await createTestSchema(self)
        beats = ("--node-heartbeat", "0.1", "--node-deadline", "5")
        service, base = await _adminServer(self, "--db", schema.dsn, "--server-id", "1",
                                           *beats)
        other = await startServer(self, "--admin-listen", "none", "--db", schema.dsn,
                                  "--server-id", "2", *beats, transports=("tcp",))
        expected = [
            (1, "sip:127.0.0.1:{};transport=tcp".format(service.ports["tcp"]), 1, True),
            (2, "sip:127.0.0.1:{};transport=tcp".format(other.ports["tcp"]), 1, True)]
        answers: list[Any] = []

        async def listed() -> bool:
            code, answer = await _http("GET", base + "/api/nodes")
            self.assertEqual(code, 200)
            answers.append(answer)
            return [(n["serverId"], n["uri"], n["incarnation"], n["alive"])
                    for n in answer["nodes"]] == expected

        # The servers join before their listeners bind port 0; their URIs
        # have the bound ports from the next heartbeat on.
        await waitUntil(listed, what="both nodes listed with their ports")
        answer = answers[-1]
        self.assertEqual(answer["serverId"], 1)
        await other.stopService()
        code, out = await _cli(self, "nodes", "--admin", base)
        self.assertEqual(code, 0, out)
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["SERVER-ID", "URI", "INCARNATION", "STATE",
                                            "STARTED", "HEARTBEAT-AGE"])
        self.assertEqual(lines[1].split()[:6],
                         ["1", answer["nodes"][0]["uri"], "1", "alive", "(this", "node)"])
        self.assertEqual(lines[2].split()[:4], ["2", answer["nodes"][1]["uri"], "1", "dead"])

    async def test_noNodeTable(self) -> None:
        """
        Without C{--db} there is no node table: C{GET /api/nodes} answers
        C{501} saying so, and C{sipcore nodes} prints it and exits 1.
        """
        service, base = await _adminServer(self)
        self.assertEqual(await _http("GET", base + "/api/nodes"),
                         (501, {"error": "no node table: this server runs without --db"}))
        code, out = await _cli(self, "nodes", "--admin", base)
        self.assertEqual(code, 1)
        self.assertIn("501 /api/nodes: no node table", out)
