"""
Tests for L{sipcore.tap}: options and the service they build.
"""

from __future__ import annotations

import sys
from io import StringIO

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from sipcore.events import TCP_CLOSED
from sipcore.location import Binding
from sipcore.plugin import HandlerConfigError, OptionError
from sipcore.service import OrderedServices
from sipcore.tap import Options, buildService, listHandlers
from sipcore.testing import UDPMemoryReactor, connectionEvent


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class OptionsTests(SynchronousTestCase):
    """
    Command-line options of C{twistd sipcore}.
    """

    def test_defaults(self) -> None:
        """
        Without options: UDP and TCP on 5060, WebSocket on 8080, the
        in-memory store, server id 0 and the location-cleanup handler.
        """
        options = parse()
        self.assertEqual(options["listen"], ["udp:5060", "tcp:5060", "ws:8080"])
        self.assertEqual(options["db"], "")
        self.assertEqual(options["server-id"], 0)
        self.assertEqual(options.handlerNames(), ["location-cleanup"])

    def test_listenReplacesDefaults(self) -> None:
        """
        Any C{--listen} replaces the default listeners.
        """
        options = parse("--listen", "tcp:5070", "--listen", "ws:0:interface=127.0.0.1")
        self.assertEqual(options["listen"], ["tcp:5070", "ws:0:interface=127.0.0.1"])

    def test_badListen(self) -> None:
        """
        A listener of an unknown transport is a usage error naming it.
        """
        e = self.assertRaises(usage.UsageError, parse, "--listen", "sctp:5060")
        self.assertIn("sctp:5060", str(e))

    def test_listenTwice(self) -> None:
        """
        The same listener given twice is a usage error (each listener is a
        service named after its spec).
        """
        e = self.assertRaises(usage.UsageError, parse, "--listen", "udp:0",
                              "--listen", "UDP:0")
        self.assertEqual(str(e), "--listen UDP:0: given twice")
        parse("--listen", "udp:0", "--listen", "udp:0:interface=127.0.0.1")

    def test_handlers(self) -> None:
        """
        C{--handler} adds to the defaults, C{--disable-handler} removes one,
        and C{--handler-option} collects options per handler.
        """
        options = parse("--handler", "connection-audit", "--disable-handler",
                        "location-cleanup", "--handler-option", "connection-audit:a=b=c")
        self.assertEqual(options.handlerNames(), ["connection-audit"])
        self.assertEqual(options["handler-option"], {"connection-audit": {"a": "b=c"}})

    def test_badHandlerOption(self) -> None:
        """
        A handler option without C{NAME:key=value} shape is a usage error.
        """
        self.assertRaises(usage.UsageError, parse, "--handler-option", "nokey")

    def test_outOfRangeNumbers(self) -> None:
        """
        A server id the table cannot hold, or an expiry beyond ten years, is
        a usage error rather than a failure at every REGISTER.
        """
        self.assertRaises(usage.UsageError, parse, "--server-id", str(2**31))
        self.assertRaises(usage.UsageError, parse, "--max-expires", str(10**10))

    def test_dbInitNeedsDb(self) -> None:
        """
        C{--db-init} without C{--db} is a usage error.
        """
        self.assertRaises(usage.UsageError, parse, "--db-init")

    def test_expiresBounds(self) -> None:
        """
        A minimum expiry above the maximum is refused, and so is a
        foreign-domain status other than 403 or 404.
        """
        self.assertRaises(usage.UsageError, parse, "--min-expires", "100",
                          "--max-expires", "50")
        self.assertRaises(usage.UsageError, parse, "--foreign-domain-status", "500")


class HelpAndVersionTests(SynchronousTestCase):
    """
    C{twistd sipcore --version} and C{--help}.
    """

    def test_version(self) -> None:
        """
        C{--version} prints sipcore's version (Twisted's after it, in
        parentheses) and exits 0.
        """
        from sipcore import __version__
        from twisted import copyright

        out = StringIO()
        self.patch(sys, "stdout", out)
        with self.assertRaises(SystemExit) as caught:
            parse("--version")
        self.assertEqual(caught.exception.code, 0)
        self.assertEqual(out.getvalue(), "sipcore {} (Twisted {})\n".format(
            __version__, copyright.version))

    def test_helpText(self) -> None:
        """
        The help text has no run of spaces inside an option's text and no
        empty C{[default: ]}; C{--advertise-host} states its one default.
        """
        text = Options().getUsage(width=80)
        lines = text.splitlines()
        first = next(i for i, line in enumerate(lines) if "--advertise-host=" in line)
        start = lines[first].index("Host put in Via")
        for line in lines:
            self.assertNotRegex(line[start:], r"\S  +\S")
        self.assertNotIn("[default: ]", text)
        end = next(i for i in range(first + 1, len(lines)) if lines[i][:start].strip())
        entry = " ".join(" ".join(lines[first:end]).split())
        self.assertEqual(entry.count("default"), 1)
        self.assertIn("(default: the first --domain given)", entry)

    def test_helpKeepsDefaults(self) -> None:
        """
        Showing the help leaves the options' defaults as they were (the
        configuration file reads them).
        """
        options = Options()
        before = dict(options.defaults)
        options.getUsage()
        self.assertEqual(options.defaults, before)


class BuildServiceTests(SynchronousTestCase):
    """
    L{buildService} wires the parts together; the service starts and stops
    them in order.
    """

    def setUp(self) -> None:
        self.reactor = UDPMemoryReactor()

    def build(self, *args: str) -> object:
        return buildService(parse(*args), self.reactor)

    def test_startListens(self) -> None:
        """
        Starting the service listens on every configured endpoint after the
        handlers started, and on the admin API's default port 8060.
        """
        service = self.build()
        self.successResultOf(service.startService())  # type: ignore[attr-defined]
        self.assertEqual([port for port, _, _ in self.reactor.udpServers], [5060])
        self.assertEqual(sorted(port for port, *_ in self.reactor.tcpServers),
                         [5060, 8060, 8080])
        self.assertEqual([h.name for h in service.handlers], ["location-cleanup"])  # type: ignore[attr-defined]
        self.assertEqual([q.name for q in service.queues], ["location-cleanup"])  # type: ignore[attr-defined]

    def test_udpReadsWholeMessages(self) -> None:
        """
        The UDP listener reads datagrams up to the message size limit (not
        Twisted's 8192-byte default, which would cut larger messages).
        """
        service = self.build("--max-message-size", "20000")
        self.successResultOf(service.startService())  # type: ignore[attr-defined]
        self.assertEqual(self.reactor.udpPacketSizes, [20001])
        self.successResultOf(service.stopService())  # type: ignore[attr-defined]

    def test_unknownHandler(self) -> None:
        """
        An unknown handler name stops the build with an error naming it.
        """
        e = self.assertRaises(HandlerConfigError, self.build, "--handler", "no-such-handler")
        self.assertIn("no-such-handler", str(e))

    def test_optionForDisabledHandler(self) -> None:
        """
        Options for a handler that is not enabled are refused: they are a
        typo or a forgotten C{--handler}.
        """
        e = self.assertRaises(HandlerConfigError, self.build,
                              "--handler-option", "connection-audt:x=1")
        self.assertIn("connection-audt", str(e))

    def test_badHandlerOptionValue(self) -> None:
        """
        A handler option the handler cannot use stops the build with a
        clear message.
        """
        e = self.assertRaises(OptionError, self.build,
                              "--handler-option", "location-cleanup:batch-size=many")
        self.assertEqual(
            str(e), "handler 'location-cleanup': Parameter type enforcement failed: "
            "must be an integer, not 'many'")
        e = self.assertRaises(OptionError, self.build,
                              "--handler-option", "location-cleanup:batch=5")
        self.assertEqual(
            str(e), "handler 'location-cleanup': unknown option 'batch'; known options: "
            "batch-delay, batch-size, max-queue")

    def test_handlersOfEachService(self) -> None:
        """
        Two services built in one process get handlers of their own, made
        with their own options.
        """
        one = self.build("--handler-option", "location-cleanup:batch-size=5")
        two = self.build()
        [first], [second] = one.handlers, two.handlers  # type: ignore[attr-defined]
        self.assertIsNot(first.handler, second.handler)
        self.assertEqual([q.batchSize for q in one.queues], [5])  # type: ignore[attr-defined]
        self.assertEqual([q.batchSize for q in two.queues], [1000])  # type: ignore[attr-defined]

    def test_startPurgesOwnConnectionBoundRows(self) -> None:
        """
        At start the node deletes its own connection-bound bindings and
        keeps UDP ones and other nodes' rows.
        """
        service = self.build("--server-id", "4")
        store = service.store  # type: ignore[attr-defined]
        self.reactor.advance(100)
        now = self.reactor.seconds()

        def binding(ruid: str, serverId: int, conid: int) -> Binding:
            return Binding(ruid=ruid, username="u", domain="example.com",
                           contact="sip:u@192.0.2.1", expires=now + 600,
                           serverId=serverId, connectionId=conid, lastModified=now - 50)

        self.successResultOf(store.save([binding("a", 4, 17), binding("b", 4, -1),
                                         binding("c", 5, 17)]))
        self.successResultOf(service.startService())  # type: ignore[attr-defined]
        remaining = self.successResultOf(store.lookup("u@example.com", now))
        self.assertEqual(sorted(b.ruid for b in remaining), ["b", "c"])

    def test_expiryTimer(self) -> None:
        """
        The expiry timer removes expired bindings at its interval.
        """
        service = self.build("--expiry-interval", "30")
        store = service.store  # type: ignore[attr-defined]
        now = self.reactor.seconds()
        self.successResultOf(store.save([Binding(
            ruid="x", username="u", domain="example.com", contact="sip:u@192.0.2.1",
            expires=now + 40)]))
        self.successResultOf(service.startService())  # type: ignore[attr-defined]
        self.reactor.advance(30)
        self.assertEqual(len(store.allBindings()), 1)
        self.reactor.advance(30)
        self.assertEqual(store.allBindings(), [])

    def test_closeEventRemovesBindings(self) -> None:
        """
        A close event on the bus reaches location-cleanup, which removes
        that connection's bindings (and no other) through its job queue.
        """
        service = self.build("--server-id", "2")
        store = service.store  # type: ignore[attr-defined]
        now = self.reactor.seconds()
        self.successResultOf(service.startService())  # type: ignore[attr-defined]
        self.successResultOf(store.save([
            Binding(ruid=str(conid), username="u", domain="example.com",
                    contact="sip:u@192.0.2.1:{}".format(conid), expires=now + 600,
                    serverId=2, connectionId=conid)
            for conid in (7, 8)]))
        service.bus.fire(connectionEvent(TCP_CLOSED, conid=7))  # type: ignore[attr-defined]
        self.reactor.advance(1)
        self.assertEqual([b.connectionId for b in store.allBindings()], [8])

    def test_stopDrainsAndCloses(self) -> None:
        """
        Stopping stops listening, drains the cleanup queue and leaves no
        timer behind.
        """
        service = self.build()
        self.successResultOf(service.startService())  # type: ignore[attr-defined]
        service.bus.fire(connectionEvent(TCP_CLOSED, conid=3))  # type: ignore[attr-defined]
        d = service.stopService()  # type: ignore[attr-defined]
        self.reactor.advance(1)
        self.successResultOf(d)
        self.assertEqual([q.depth for q in service.queues], [0])  # type: ignore[attr-defined]
        self.assertEqual([s.running for s in service.listeners],  # type: ignore[attr-defined]
                         [False, False, False])
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class ShutdownDeadlineTests(SynchronousTestCase):
    """
    Shutdown drains every job queue within one C{--drain-deadline}, not one
    deadline per queue.
    """

    def test_queuesDrainTogether(self) -> None:
        """
        Two queues whose batches never finish: the service has stopped once
        the deadline has passed once.
        """
        from twisted.internet import defer

        reactor = UDPMemoryReactor()
        service = buildService(parse("--drain-deadline", "5"), reactor)
        self.successResultOf(service.startService())
        context = service.handlers[0].handler.context
        for name in ("slow-a", "slow-b"):
            queue = context.makeJobQueue(name, lambda items: defer.Deferred())
            queue.start()
            queue.put(1)
        reactor.advance(0)
        stopped = service.stopService()
        reactor.advance(4.9)
        self.assertNoResult(stopped)
        reactor.advance(0.2)
        self.successResultOf(stopped)
        self.flushLoggedErrors(defer.CancelledError)


class OrderedServicesTests(SynchronousTestCase):
    """
    L{OrderedServices} starts its children in order, each after the one
    before has started, and stops them in reverse, each after the one
    after has stopped.
    """

    def setUp(self) -> None:
        self.events: list[str] = []
        self.parent = OrderedServices()
        self.children = [_SlowService(name, self.events) for name in ("a", "b", "c")]
        for child in self.children:
            child.setServiceParent(self.parent)

    def test_startInOrder(self) -> None:
        """
        The second child starts only once the first one's start has fired.
        """
        started = self.parent.startService()
        self.assertEqual(self.events, ["start a"])
        self.children[0].finish()
        self.assertEqual(self.events, ["start a", "start b"])
        self.children[1].finish()
        self.children[2].finish()
        self.assertIsNone(self.successResultOf(started))

    def test_stopInReverse(self) -> None:
        """
        The children stop last first, each once the next one has stopped.
        """
        self.parent.startService()
        for child in self.children:
            child.finish()
        del self.events[:]
        stopped = self.parent.stopService()
        self.assertEqual(self.events, ["stop c"])
        self.children[2].finish()
        self.assertEqual(self.events, ["stop c", "stop b"])
        self.children[1].finish()
        self.children[0].finish()
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(self.events, ["stop c", "stop b", "stop a"])

    def test_stopWhileStarting(self) -> None:
        """
        A stop during the start cancels the child's start in progress,
        starts no other child and stops the ones that started.
        """
        started = self.parent.startService()
        self.children[0].finish()
        stopped = self.parent.stopService()
        self.assertIsNone(self.successResultOf(started))
        self.assertEqual(self.events, ["start a", "start b", "cancel b", "stop b"])
        self.children[1].finish()
        self.children[0].finish()
        self.successResultOf(stopped)
        self.assertEqual(self.events[-1], "stop a")
        self.assertFalse(self.children[2].running)

    def test_startFailure(self) -> None:
        """
        A child that fails to start fails the parent's start; the children
        after it do not start.
        """
        started = self.parent.startService()
        self.children[0].fail()
        self.failureResultOf(started, ZeroDivisionError)
        self.assertEqual(self.events, ["start a"])


class _SlowService(Service):
    """
    A service whose start and stop fire when the test says.
    """

    def __init__(self, name: str, events: list[str]) -> None:
        self.name = name
        self.events = events
        self.pending: Deferred[None] | None = None

    def _wait(self, what: str) -> Deferred[None]:
        self.events.append("{} {}".format(what, self.name))
        self.pending = Deferred(lambda d: self.events.append("cancel {}".format(self.name)))
        return self.pending

    def startService(self) -> Deferred[None]:  # type: ignore[override]
        Service.startService(self)
        return self._wait("start")

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        Service.stopService(self)
        return self._wait("stop")

    def finish(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None and not pending.called:
            pending.callback(None)

    def fail(self) -> None:
        pending, self.pending = self.pending, None
        assert pending is not None
        pending.errback(ZeroDivisionError())


class ServiceTreeTests(SynchronousTestCase):
    """
    The service L{buildService} makes is a tree started and stopped in
    order (docs/architecture.rst).
    """

    def test_tree(self) -> None:
        """
        The root's children are the store, the handlers, the core and the
        listeners, in that order; with C{--metrics-listen} the metrics
        service comes next, then the reload service, the admin API (unless
        C{--admin-listen none}), and the systemd notice last (it starts once
        all the others have).
        """
        service = buildService(parse("--metrics-listen", "tcp:0", "--admin-listen", "none"),
                               UDPMemoryReactor())
        self.assertEqual([child.name for child in service],
                         ["store", "handlers", "core", "listeners", "metrics", "reload",
                          "systemd-notify"])
        service = buildService(parse("--metrics-listen", "tcp:0"), UDPMemoryReactor())
        self.assertEqual([child.name for child in service],
                         ["store", "handlers", "core", "listeners", "metrics", "reload",
                          "admin", "systemd-notify"])
        listeners = service.getServiceNamed("listeners")
        self.assertEqual(list(listeners), service.listeners)

    def test_privilegedStartBinds(self) -> None:
        """
        C{privilegedStartService} binds every listener before the store is
        opened (so ports below 1024 work with C{twistd --uid}).
        """
        reactor = UDPMemoryReactor()
        service = buildService(parse("--listen", "udp:506", "--listen", "tcp:506",
                                     "--admin-listen", "none"), reactor)
        opened: list[bool] = []
        start = service.store.start

        def recordStart() -> Deferred[None]:
            opened.append(True)
            return start()  # type: ignore[no-any-return]

        service.store.start = recordStart  # type: ignore[method-assign]
        service.privilegedStartService()
        self.assertEqual((len(reactor.udpServers), len(reactor.tcpServers)), (1, 1))
        self.assertEqual(opened, [])
        self.successResultOf(service.startService())
        self.assertEqual(opened, [True])
        self.assertEqual((len(reactor.udpServers), len(reactor.tcpServers)), (1, 1))
        self.assertTrue(all(listener.running for listener in service.listeners))


class ListHandlersTests(SynchronousTestCase):
    """
    C{--list-handlers} describes the handler plugins found.
    """

    def test_builtinListed(self) -> None:
        """
        The built-in location-cleanup handler is listed with its events.
        """
        out = StringIO()
        listHandlers(out)
        text = out.getvalue()
        self.assertIn("location-cleanup", text)
        self.assertIn(TCP_CLOSED, text)
