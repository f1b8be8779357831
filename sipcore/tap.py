# -*- test-case-name: tests.test_tap -*-
"""
The composition root: command-line options and the service they build.

L{makeService} is the only place that imports the global reactor;
L{buildService} takes the reactor as an argument, so tests pass a
C{MemoryReactor}.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.application.app import ReactorSelectionMixin
from twisted.python import usage

from sipcore import admin as _admin
from sipcore.events.discovery import findHandlers, selectHandlers
from sipcore.plugin import HandlerConfigError, HandlerError
from sipcore.transport.listen import DEFAULT_LISTEN, parseListen

#: Handlers enabled unless C{--disable-handler} says otherwise.
DEFAULT_HANDLERS: tuple[str, ...] = ("location-cleanup",)

#: The handler C{--log-events} enables.
EVENT_LOG = "event-log"


#: The location table's integer columns (server_id, expires offsets) are
#: 32-bit signed.
_INT32_MAX = 2**31 - 1


def _positiveInt(value: str) -> int:
    number = int(value)
    if number > _INT32_MAX:
        raise ValueError("must be at most {}".format(_INT32_MAX))
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _positiveFloat(value: str) -> float:
    number = float(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


class Options(usage.Options):
    """
    C{twistd sipcore} options.
    """

    synopsis = "[options]"
    longdesc = (
        "Run the sipcore SIP registrar and proxy. Without --db it keeps "
        "registrations in memory; with --db (a libpq DSN) it uses Kamailio's "
        "usrloc 'location' table in PostgreSQL."
    )

    optFlags = [
        ["db-init", None, "Create the location schema at start if it is missing."],
        ["list-handlers", None, "List the handler plugins found and exit."],
        ["auth-db", None, "Authenticate with Kamailio's subscriber table in --db."],
        ["log-events", None,
         "Log one line per binding added, removed or expired and per stream connection "
         "close (conid, address of record, transport, reason): the event-log handler."],
        ["forward-foreign", None,
         "Forward initial requests for other domains to the IP address and port in "
         "their Request-URI (default: refuse them with 403)."],
    ]

    optParameters = [
        ["server-id", None, 0, "This node's server_id in the location table.", _positiveInt],
        ["db", None, "", "libpq DSN of the PostgreSQL database; empty: in-memory store."],
        ["node-uri", None, "",
         "With --db: the SIP URI the other nodes of the cluster reach this one at "
         "(default: from the first tcp, else tls, listener and --advertise-host, e.g. "
         "sip:HOST:PORT;transport=tcp)."],
        ["node-heartbeat", None, 5.0,
         "With --db: seconds between this node's heartbeats in the node table.",
         _positiveFloat],
        ["node-deadline", None, 15.0,
         "With --db: seconds without a heartbeat after which a node is declared dead "
         "and its connection-bound bindings are removed.", _positiveFloat],
        ["max-message-size", None, 65536, "Largest SIP message accepted, in bytes.",
         _positiveInt],
        ["idle-timeout", None, 3600.0,
         "Seconds a stream connection carrying a registration may stay silent before it "
         "is closed (0: never).",
         _positiveFloat],
        ["expiry-interval", None, 60.0,
         "Seconds between removals of expired bindings (0: never).", _positiveFloat],
        ["drain-deadline", None, 10.0,
         "Seconds the job queues may take to drain at shutdown.", _positiveFloat],
        ["default-expires", None, 3600, "Expiry of a registration that asks for none.",
         _positiveInt],
        ["min-expires", None, 60, "Shortest registration accepted (else 423).", _positiveInt],
        ["max-expires", None, 86400, "Longest registration granted.", _positiveInt],
        ["metrics-listen", None, "",
         "Endpoint serving GET /metrics (Prometheus text), e.g. "
         "tcp:9060:interface=127.0.0.1; empty: off."],
        ["admin-listen", None, "",
         "Endpoint of the admin API, health checks and status page (default: {}, "
         "skipped with a warning when taken; {}: off). Beyond loopback it needs a "
         "token.".format(_admin.DEFAULT_LISTEN, _admin.OFF)],
        ["admin-token-file", None, "",
         "File holding the admin API's bearer token (default: the SIPCORE_ADMIN_TOKEN "
         "environment variable; none: no token on loopback)."],
        ["foreign-domain-status", None, 403,
         "Status for a REGISTER to a domain this server does not serve (403 or 404).", int],
        ["max-contacts", None, 10,
         "Most bindings per address of record, and most Contact values in one REGISTER "
         "(more: 403) (0: no limit).", _positiveInt],
        ["max-contacts-policy", None, "replace",
         "A REGISTER that would take an address of record over --max-contacts: replace "
         "(its oldest bindings are removed) or reject (403, nothing changed)."],
        ["server-header", None, "sipcore",
         "Server header of the responses the server makes (empty: none)."],
        ["timer-c", None, 180.0,
         "Seconds an INVITE branch may wait for its next provisional response before "
         "it is cancelled and the caller gets 408.", _positiveFloat],
        ["advertise-host", None, "",
         "Host put in Via and Record-Route for listeners bound to the wildcard address "
         "(default: the first --domain given)."],
        ["sip-trace", None, "",
         "Write every SIP message received and sent to this pcap file (decrypted for "
         "TLS and WSS; see 'Capture' in the operations docs); empty: off."],
        ["hep", None, "",
         "Send every SIP message received and sent to this HEP v3 collector over UDP "
         "(IP:PORT or [IPv6]:PORT); empty: off."],
        ["hep-agent-id", None, 0, "Capture agent id in the HEP packets.", _positiveInt],
        ["max-branches", None, 10,
         "Most branches a request to an address of record forks to (highest q first, "
         "then the most recently registered).", _positiveInt],
        ["auth-file", None, "",
         "Authenticate with the users in this file (user@domain:password or "
         "user@domain:ha1=HEX per line)."],
        ["auth-secret", None, "",
         "Nonce signing secret shared by all nodes (default: $SIPCORE_AUTH_SECRET, "
         "else random per process)."],
        ["auth-methods", None, "REGISTER",
         "Comma-separated methods to challenge (e.g. REGISTER,INVITE,MESSAGE,SUBSCRIBE)."],
        ["auth-algorithms", None, "MD5",
         "Digest algorithms offered, one challenge each in this order (MD5, SHA-256; "
         "e.g. MD5,SHA-256: see 'Client interoperability' in the security docs)."],
        ["nonce-lifetime", None, 300.0, "Seconds a digest nonce stays valid.", _positiveFloat],
        ["auth-max-failures", None, 10,
         "Failed authentications an account (user@realm) may have at once before it is "
         "locked out (0: no per-account limit).", _positiveInt],
        ["auth-failure-window", None, 600.0,
         "Seconds in which an account gets its --auth-max-failures back.", _positiveFloat],
        ["auth-lockout", None, 900.0,
         "Seconds a locked-out account's attempts get 403 (except from the sources it "
         "authenticated from recently).", _positiveFloat],
        ["max-connections", None, 10000,
         "Most stream connections at once (0: no limit).", _positiveInt],
        ["max-connections-per-source", None, 256,
         "Most stream connections from one IP address (0: no limit).", _positiveInt],
        ["rate-limit", None, 50.0,
         "Requests per second one IP address may send (0: no limit).", _positiveFloat],
        ["rate-burst", None, 200.0, "Requests one IP address may send at once.",
         _positiveFloat],
        ["rate-overdraft", None, 50.0,
         "Requests over the rate answered 503 before the rest are dropped.", _positiveFloat],
        ["max-transactions", None, 50000,
         "Most transactions in flight; more get 503 (0: no limit).", _positiveInt],
        ["message-timeout", None, 20.0,
         "Seconds a partly received stream message may take to complete (0: no limit).",
         _positiveFloat],
        ["handshake-timeout", None, 10.0,
         "Seconds a stream connection has from its accept to its first complete SIP "
         "message (TCP; TLS: the TLS handshake included) or to the end of its WebSocket "
         "handshake (WS, WSS) (0: no limit).", _positiveFloat],
        ["unregistered-idle-timeout", None, 120.0,
         "Seconds a stream connection without a live registration may stay silent "
         "before it is closed (0: as --idle-timeout).", _positiveFloat],
        ["ws-max-handshake-size", None, 16384,
         "Largest WebSocket handshake request accepted, in bytes; larger ones get HTTP "
         "431 (0: no limit).", _positiveInt],
        ["listen-backlog", None, 1024,
         "Pending connections each TCP, TLS, WS and WSS listener queues (a listen spec's "
         "backlog= overrides it).", _positiveInt],
        ["ws-ping-interval", None, 60.0,
         "Seconds between WebSocket pings (0: no pings).", _positiveFloat],
        ["ws-ping-timeout", None, 20.0,
         "Seconds to wait for a WebSocket pong before closing.", _positiveFloat],
        ["limit-log-interval", None, 60.0,
         "Seconds between two log lines about one limit and source.", _positiveFloat],
        ["group-commit-window", None, 0.002,
         "With --db or the workers' shared store: seconds REGISTERs wait to share one "
         "location write (and one lookup) statement.", _positiveFloat],
        ["routing-timeout", None, 5.0,
         "Seconds a router (--router) may take to answer before the caller gets 500.",
         _positiveFloat],
        ["redirects", None, "relay",
         "A 3xx response a branch receives: relay (to the caller) or recurse (forward to "
         "its Contacts, at most --max-branches branches per request)."],
        ["group-commit-max", None, 500,
         "With --db or the workers' shared store: most bindings per group-committed "
         "statement (0: no group commit).",
         _positiveInt],
        ["connect-timeout", None, 10.0,
         "Seconds to open an outgoing TCP or TLS connection (TLS handshake included).",
         _positiveFloat],
        ["outgoing-idle-timeout", None, 120.0,
         "Seconds an outgoing connection may carry no traffic before it is closed "
         "(0: never).", _positiveFloat],
        ["tls-ca-file", None, "",
         "PEM file of the CAs outgoing TLS servers are verified against "
         "(default: the system's trust store)."],
        ["tls-client-cert", None, "",
         "PEM file of the client certificate (and key) outgoing TLS connections present."],
        ["tls-client-key", None, "",
         "PEM file of the key of --tls-client-cert, if not in that file."],
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        # The help shows each option's text as one paragraph: the line
        # breaks and indentation of the opt_ docstrings become single spaces.
        self.docs = {name: " ".join(doc.split()) if doc else doc
                     for name, doc in self.docs.items()}
        self["listen"] = []
        self["domain"] = []
        self["handler"] = []
        self["disable-handler"] = []
        self["handler-option"] = {}
        self["ws-origin"] = []
        self["limit-exempt"] = []
        self["trusted-peer"] = []
        self["dns-server"] = []
        self["router"] = []

    def opt_version(self) -> None:
        """
        Print sipcore's version (and Twisted's) and exit.
        """
        from sipcore import __version__
        from twisted import copyright

        print("sipcore {} (Twisted {})".format(__version__, copyright.version))
        raise SystemExit(0)

    def getUsage(self, width: int | None = None) -> str:
        """
        The option help, without a C{[default: ]} for the parameters whose
        default is empty (their text says what applies then).
        """
        defaults = self.defaults
        self.defaults = {name: value for name, value in defaults.items() if value != ""}
        try:
            return super().getUsage(width)
        finally:
            self.defaults = defaults

    def opt_listen(self, spec: str) -> None:
        """
        Listen on TRANSPORT:PORT[:key=value...]; TRANSPORT is udp, tcp, tls, ws
        or wss. Repeatable; replaces the defaults (udp:5060, tcp:5060, ws:8080).
        """
        try:
            parsed = parseListen(spec)
        except ValueError as e:
            raise usage.UsageError("--listen {}: {}".format(spec, e)) from e
        for given in self["listen"]:
            if parseListen(given) == parsed:
                raise usage.UsageError("--listen {}: given twice".format(spec))
        self["listen"].append(spec)

    def opt_domain(self, domain: str) -> None:
        """
        A domain this server is responsible for. Repeatable.
        """
        self["domain"].append(domain.lower())

    def opt_handler(self, name: str) -> None:
        """
        Enable a handler plugin by name, besides the defaults. Repeatable.
        """
        self["handler"].append(name)

    def opt_disable_handler(self, name: str) -> None:
        """
        Disable a default handler plugin (location-cleanup). Repeatable.
        """
        self["disable-handler"].append(name)

    def opt_handler_option(self, spec: str) -> None:
        """
        Give a handler an option: NAME:key=value. Repeatable.
        """
        name, sep, rest = spec.partition(":")
        key, eq, value = rest.partition("=")
        if not (name and sep and key and eq):
            raise usage.UsageError(
                "--handler-option {!r}: expected NAME:key=value".format(spec))
        self["handler-option"].setdefault(name, {})[key] = value

    _configPath: str | None = None

    def parseOptions(self, options: Any = None) -> None:
        """
        Parse the command line after the arguments its C{--config FILE}
        stands for.
        """
        from sipcore.config import configPath, withConfig

        argv = list(sys.argv[1:] if options is None else options)
        self._configPath = configPath(argv)
        usage.Options.parseOptions(self, withConfig(argv, self))

    def opt_config(self, path: str) -> None:
        """
        Read options from an INI file ([sipcore], [handler:NAME]) before the command line's,
        which override it.
        """
        if path != self._configPath:
            raise usage.UsageError("write --config FILE or --config=FILE in full")
        self["config"] = path

    def opt_ws_origin(self, pattern: str) -> None:
        """
        Allow WebSocket handshakes with this Origin (* is a wildcard, e.g.
        https://*.example.com; '*' allows all). Repeatable. Default: only
        the --domain hosts, --advertise-host and the address the connection
        was accepted on.
        """
        self["ws-origin"].append(pattern)

    def opt_limit_exempt(self, address: str) -> None:
        """
        An IP address the per-source limits (request rate, connections) do
        not apply to. Repeatable; replaces the default (127.0.0.1 and ::1);
        'none' exempts no address.
        """
        self["limit-exempt"].append(address)

    def opt_trusted_peer(self, spec: str) -> None:
        """
        An IP address or network (ADDRESS[/PREFIX], IPv4 or IPv6) of a proxy
        whose Path headers in REGISTER are honoured. Repeatable; default
        none: a REGISTER with Path gets 403.
        """
        from sipcore.sip.trust import parseNetwork

        try:
            parseNetwork(spec)
        except ValueError as e:
            raise usage.UsageError("--trusted-peer: {}".format(e)) from None
        self["trusted-peer"].append(spec)

    def opt_dns_server(self, spec: str) -> None:
        """
        A DNS server (HOST or HOST:PORT, an IP address) names are located
        with (RFC 3263); repeatable.  Default: the name servers of
        /etc/resolv.conf.
        """
        from sipcore.dns import parseServer

        try:
            self["dns-server"].append(parseServer(spec))
        except ValueError as e:
            raise usage.UsageError("--dns-server: {}".format(e)) from None
    def opt_router(self, name: str) -> None:
        """
        An enabled handler that routes initial requests for no registered
        local user (a provider of IRouter, such as 'routes'). Repeatable:
        routers are asked in the order given.
        """
        if name not in self["router"]:
            self["router"].append(name)

    def postOptions(self) -> None:
        if self["list-handlers"]:
            return
        if isinstance(self.parent, ReactorSelectionMixin) and self.parent.get("reactor") is None:
            _installFairReactor()
        self["capture"] = _captureSettings(self)
        if self["redirects"] not in ("relay", "recurse"):
            raise usage.UsageError("--redirects must be relay or recurse")
        if not self["listen"]:
            self["listen"] = list(DEFAULT_LISTEN)
        if self["foreign-domain-status"] not in (403, 404):
            raise usage.UsageError("--foreign-domain-status must be 403 or 404")
        if self["metrics-listen"]:
            from twisted.internet.endpoints import serverFromString
            from twisted.internet.testing import MemoryReactor

            try:
                serverFromString(MemoryReactor(), self["metrics-listen"])
            except (ValueError, KeyError, TypeError) as e:
                raise usage.UsageError(
                    "--metrics-listen {!r}: {}".format(self["metrics-listen"], e)) from e
        self["admin"] = _adminSettings(self)
        if self["db-init"] and not self["db"]:
            raise usage.UsageError("--db-init needs --db")
        _checkNodeOptions(self)
        if self["max-expires"] > 10 * 365 * 86400:
            raise usage.UsageError("--max-expires must be at most ten years (315360000)")
        if self["min-expires"] > self["max-expires"]:
            raise usage.UsageError("--min-expires must not exceed --max-expires")
        if not self["domain"]:
            self["domain"] = ["localhost", "127.0.0.1"]
        _checkSecurityOptions(self)
        self["outgoing"] = _outgoingSettings(self)

    def handlerNames(self) -> list[str]:
        """
        The handlers to enable, in the order given, without duplicates.
        """
        names: list[str] = []
        extra = [EVENT_LOG] if self["log-events"] else []
        for name in list(DEFAULT_HANDLERS) + extra + self["handler"]:
            if name not in names and name not in self["disable-handler"]:
                names.append(name)
        return names


def _checkNodeOptions(options: Options) -> None:
    """
    Check C{--node-uri}, C{--node-heartbeat} and C{--node-deadline}.

    @raise usage.UsageError: one is given without C{--db}, the URI is not
        a SIP URI, or the deadline is not longer than the heartbeat.
    """
    given = [name for name in ("node-uri", "node-heartbeat", "node-deadline")
             if options[name] != options.defaults[name]]
    if given and not options["db"]:
        raise usage.UsageError("--{} needs --db (the node table is in the database)".format(
            given[0]))
    if options["node-uri"]:
        from sipcore.message import SIPParseError
        from sipcore.message.uri import parseURI

        try:
            uri = parseURI(options["node-uri"])
        except SIPParseError as e:
            raise usage.UsageError("--node-uri: {}".format(e)) from None
        if uri.scheme not in ("sip", "sips"):
            raise usage.UsageError("--node-uri must be a sip: or sips: URI")
    if not options["node-heartbeat"] > 0:
        raise usage.UsageError("--node-heartbeat must be positive")
    if not options["node-deadline"] > options["node-heartbeat"]:
        raise usage.UsageError("--node-deadline must be longer than --node-heartbeat")


def _installFairReactor() -> None:
    """
    Install L{sipcore.reactor.FairEPollReactor} as the global reactor, as
    twistd installs the one its C{--reactor} names: while twistd reads its
    options, before anything imports the global reactor.  Where there is no
    epoll (not Linux), or a reactor is installed already, that one stays;
    the server logs at start which reactor runs (L{sipcore.service}).
    """
    from twisted.internet.error import ReactorAlreadyInstalledError

    try:
        import sipcore.reactor
    except ImportError:
        return
    try:
        sipcore.reactor.install()
    except ReactorAlreadyInstalledError:
        pass


def listHandlers(out: Any = None, package: Any = None) -> str:
    """
    Describe every handler plugin found (name, whether it is on by default,
    description, events, priority, API version, limits, implementation and
    options), then every problem met while looking for them.

    @param out: where to write (default stdout).
    @param package: the plugin package to search (default
        C{twisted.plugins}).
    @return: the text written.
    """
    from sipcore.events.discovery import describeHandler, discoverHandlers
    from sipcore.plugin import HANDLER_API_VERSION

    found = discoverHandlers(package)
    problems = [str(problem) for problem in found.problems]
    lines = ["Handler plugins (this sipcore implements handler API version {}):".format(
        HANDLER_API_VERSION)]
    for name in sorted(found):
        if name in DEFAULT_HANDLERS:
            state = "on by default; disable with --disable-handler " + name
        else:
            state = "off by default; enable with --handler " + name
        described, problem = describeHandler(found[name])
        lines += ["", "{}  [{}]".format(name, state)] + described
        if problem is not None:
            problems.append(problem)
    if not found:
        lines += ["", "no handler plugins found"]
    if problems:
        lines += ["", "Problems:"] + ["    " + problem for problem in problems]
    text = "\n".join(lines) + "\n"
    (out or sys.stdout).write(text)
    return text


def buildService(options: Options, reactor: Any, signals: bool = False) -> Any:
    """
    Build the server from parsed options with the given reactor: each part
    complete when made, then the service tree that starts and stops them in
    order (L{sipcore.service}).

    @param signals: answer C{SIGHUP} with a reload while running (the
        twistd entry point; tests leave the process's handlers alone).

    @return: the L{sipcore.service.SIPCoreService}.
    @raise HandlerError: a handler is unknown, duplicated, failed to
        import, is incompatible, was given options while not enabled or
        options it refuses, or refuses to be made.
    """
    from sipcore.events.bus import EventBus
    from sipcore.lag import fromEnvironment
    from sipcore.location import MemoryLocationStore
    from sipcore.location.ordering import PendingWrites
    from sipcore.metrics import CollectorRegistry
    from sipcore.plugin import EnabledHandler, HandlerContext, parseOptions
    from sipcore.service import HandlerService, SIPCoreService, StoreService
    from sipcore.sip.core import SIPCore, supportedTags
    from sipcore.sip.registrar import Registrar, RegistrarPolicy
    from sipcore.sip.trust import TrustedPeers
    from sipcore.transport.connections import ConnectionLimits, ConnectionTable
    from sipcore.transport.hops import HopConnector
    from sipcore.transport.listen import ListenerService

    names = options.handlerNames()
    selected = selectHandlers(findHandlers(), names)
    stray = sorted(set(options["handler-option"]) - set(names))
    if stray:
        raise HandlerConfigError(
            "options given (--handler-option or [handler:NAME]) for handler(s) not "
            "enabled: {}; enable them with --handler NAME".format(", ".join(stray)))
    plugins = [
        (plugin, parseOptions(plugin, options["handler-option"].get(plugin.name, {})))
        for plugin in selected
    ]
    serverId = options["server-id"]
    # The figures of this server only (not prometheus_client's global registry).
    metrics = CollectorRegistry()
    admin = options["admin"]
    bus = EventBus(reactor)
    observer, captureServices = _buildCapture(options, reactor)
    table = ConnectionTable(bus, reactor, serverId=serverId, observer=observer,
                            limits=ConnectionLimits(
        maxConnections=options["max-connections"],
        maxPerSource=options["max-connections-per-source"],
        exempt=frozenset(options["limit-exempt"]),
        logInterval=options["limit-log-interval"],
    ), metrics=metrics)
    initSchema = None
    database = None
    dbPool = None
    directory = None
    if options["db"]:
        from sipcore.cluster.nodes import DatabaseNodeDirectory
        from sipcore.db import Database
        from sipcore.location import PostgresLocationStore
        from sipcore.workers import releaseWorkerStore

        releaseWorkerStore()
        database = Database(options["db"], reactor)
        dbPool = database.pool
        directory = DatabaseNodeDirectory(serverId)
        store: Any = PostgresLocationStore(dbPool)
        if options["db-init"]:
            from sipcore.db.location import initSchema as createSchema

            def initSchema() -> Any:
                return createSchema(database.pool)
    else:
        from sipcore.workers import workerStore

        # A worker of `python -m sipcore.workers` shares the store process's
        # memory store; otherwise the bindings live in this process.
        store = workerStore(reactor) or MemoryLocationStore(reactor)
    # Batch the REGISTERs' writes and reads.
    if not isinstance(store, MemoryLocationStore) and options["group-commit-max"]:
        from sipcore.location.group import GroupCommitStore

        store = GroupCommitStore(store, reactor, window=options["group-commit-window"],
                                 maxBatch=options["group-commit-max"])
    # The store that lists bindings for the admin API (the group commit
    # wrapper batches writes; listings go to the store beneath it).
    listing = store
    writes = PendingWrites()
    trustedPeers = TrustedPeers.fromStrings(options["trusted-peer"])
    limiter = _buildRateLimiter(options, reactor, metrics)
    core = SIPCore(reactor, domains=options["domain"], maxSize=_largestMessage(options),
                   supported=supportedTags(bool(trustedPeers)),
                   maxContacts=options["max-contacts"], serverHeader=options["server-header"],
                   limiter=limiter, maxTransactions=options["max-transactions"] or 2**62,
                   metrics=metrics)
    registrar = Registrar(
        store,
        reactor,
        isLocalDomain=core.isLocal,
        serverId=serverId,
        policy=RegistrarPolicy(
            defaultExpires=options["default-expires"],
            minExpires=options["min-expires"],
            maxExpires=options["max-expires"],
            foreignDomainStatus=options["foreign-domain-status"],
            trustedPeers=trustedPeers,
            logInterval=options["limit-log-interval"],
            maxContacts=options["max-contacts"],
            maxContactsPolicy=options["max-contacts-policy"],
        ),
        writes=writes,
        isConnected=lambda conid: table.get(conid) is not None,
        connectionBound=table.bound,
        announce=bus.fire,
        metrics=metrics,
    )
    core.route("REGISTER", registrar)
    # The members the proxy delivers through: the workers of this host
    # (python -m sipcore.workers), else the nodes of the database.
    workerMembers = _workerCluster()
    members: Any = directory if workerMembers is None else workerMembers[0]
    authenticator = _buildAuthentication(options, reactor, core, dbPool, metrics, members)
    listenerOptions = _listenerOptions(options, limiter)
    listenerOptions["observer"] = observer
    sink: Any = core
    if observer is not None:
        from sipcore.capture import ObservedSink

        sink = ObservedSink(core, observer)
    listeners = [
        ListenerService(
            parseListen(spec), reactor, sink, table,
            maxSize=options["max-message-size"],
            idleTimeout=options["idle-timeout"],
            backlog=options["listen-backlog"],
            **listenerOptions,
        )
        for spec in options["listen"]
    ]
    jobQueues: dict[str, Any] = {}
    connector, resolver = _buildOutgoing(options, reactor, sink, table, listeners)
    hops = HopConnector(table, listeners, connector)
    pinger = _buildPinger(options, core, hops, resolver)
    # A new handler of each plugin for this service.
    handlers = [
        EnabledHandler.make(plugin, HandlerContext(
            serverId=serverId,
            reactor=reactor,
            store=store,
            dbPool=dbPool,
            options=handlerOptions,
            writes=writes,
            jobQueues=jobQueues,
            handlerName=plugin.name,
            pinger=pinger,
        ))
        for plugin, handlerOptions in plugins
    ]
    routers = _buildRouters(options, reactor, handlers)

    def available() -> bool:
        return bool(store.available)
    # The reactor lag probe (SIPCORE_LAG_PROBE=1).
    lagProbe = fromEnvironment(reactor, metrics=metrics)
    # The proxy routes what the core and the registrar do not
    # answer; it reads the listeners' bound addresses only once they listen.
    nodeURI: Callable[[], str] | None = None
    if workerMembers is not None:
        workerURI = workerMembers[1]
        nodeURI = lambda: workerURI  # noqa: E731
    elif directory is not None:
        nodeURI = _nodeURI(options, listeners)
    proxy = _buildProxy(options, reactor, core, store, hops, resolver, routers,
                        metrics, members, nodeURI)
    reloader = _buildReload(options, reactor, listeners, handlers, signals)
    storeService = StoreService(store, reactor, serverId, initSchema=initSchema,
                                expiryInterval=options["expiry-interval"],
                                announce=bus.fire, metrics=metrics, available=available,
                                statements=lambda: store.statementCount)
    membership = None
    if dbPool is not None and directory is not None and nodeURI is not None:
        from sipcore.cluster.nodes import ClusterService

        membership = ClusterService(dbPool, reactor, directory, nodeURI,
                                    heartbeat=options["node-heartbeat"],
                                    deadline=options["node-deadline"],
                                    createTables=options["db-init"],
                                    purgeAgain=storeService.purgeAgain)
    return SIPCoreService(
        reactor,
        store=store,
        bus=bus,
        table=table,
        core=core,
        registrar=registrar,
        proxy=proxy,
        authenticator=authenticator,
        writes=writes,
        storeService=storeService,
        cluster=membership,
        handlerService=HandlerService(bus, handlers, jobQueues.values(), reactor,
                                      drainDeadline=options["drain-deadline"],
                                      metrics=metrics),
        listeners=listeners,
        metrics=metrics,
        lagProbe=lagProbe,
        metricsService=_buildMetrics(options, reactor, metrics),
        reloader=reloader,
        database=database,
        capture=captureServices,
        operations=lambda root: _buildOperations(admin, reactor, root, listing, core, table,
                                                 available, bool(options["db"])),
    )


def _nodeURI(options: Options, listeners: list[Any]) -> Any:
    """
    The function answering this node's URI in the cluster: C{--node-uri},
    else one made of the first TCP listener (else TLS, else the first
    listener of any transport): its address, or C{--advertise-host} (else
    the first C{--domain}) when it is bound to the wildcard address, its
    bound port and its transport.
    """
    from sipcore.message.uri import formatHost

    given = options["node-uri"]
    if given:
        return lambda: given
    chosen = next((listener for transport in ("tcp", "tls") for listener in listeners
                   if listener.spec.transport == transport), listeners[0])
    interface = chosen.spec.interface
    if interface in ("", "0.0.0.0", "::"):
        domains = options["domain"]
        interface = options["advertise-host"] or (domains[0] if domains else "localhost")

    def uri() -> str:
        bound = chosen.getHost()
        port = bound.port if bound is not None else chosen.spec.port
        return "sip:{}:{};transport={}".format(formatHost(interface), port,
                                               chosen.spec.transport)

    return uri


def _buildReload(options: Options, reactor: Any, listeners: list[Any], handlers: list[Any],
                 signals: bool) -> Any:
    """
    The L{sipcore.reload.ReloadService} of what a reload reads again: the
    C{--auth-file} credentials, each TLS or WSS listener's certificate
    and key, each enabled handler that provides
    L{sipcore.interfaces.IReloadable} (the routes), and under twistd
    (C{signals}) the C{--logfile} it writes, reopened.
    """
    from sipcore.interfaces import IReloadable
    from sipcore.reload import ReloadService

    parts: list[Any] = []
    if signals:
        from sipcore.logfile import reopenLogFiles

        # First, so the reload's own lines go to the new file.  twistd
        # opens its --logfile after this service is built: the files are
        # looked up at each reload.
        def reopenLog() -> str | None:
            paths = reopenLogFiles()
            return None if paths is None else paths + " reopened"

        parts.append(("log file", reopenLog))
    credentials = options.get("auth-credentials")
    if credentials is not None:
        def readCredentials() -> str:
            return "{} ({} users)".format(credentials.path, credentials.reload())

        parts.append(("credentials", readCredentials))
    for listener in listeners:
        if listener.tls is not None:
            def readCertificate(tls: Any = listener.tls) -> str:
                return "({})".format(tls.reload())

            parts.append(("certificate of {}".format(listener.spec.description.split(":")[0]
                                                     + ":" + str(listener.spec.port)),
                          readCertificate))
    for enabled in handlers:
        if IReloadable.providedBy(enabled.handler):
            parts.append(("handler {}".format(enabled.name), enabled.handler.reload))
    return ReloadService(reactor, parts, installSignal=signals)


def _adminSettings(options: Options) -> Any:
    """
    The L{sipcore.admin.AdminSettings} of the options.

    @raise usage.UsageError: they cannot be used.
    """
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    from sipcore.admin import AdminSettingsError, adminSettings

    try:
        settings = adminSettings(options["admin-listen"], options["admin-token-file"])
    except AdminSettingsError as e:
        raise usage.UsageError(str(e)) from None
    if settings.listen:
        try:
            serverFromString(MemoryReactor(), settings.listen)
        except (ValueError, KeyError, TypeError) as e:
            raise usage.UsageError(
                "--admin-listen {!r}: {}".format(options["admin-listen"], e)) from e
    return settings


def _buildOperations(admin: Any, reactor: Any, root: Any, listing: Any, core: Any, table: Any,
                     storeAvailable: Any, usesDatabase: bool) -> list[Any]:
    """
    The services started last: the admin API (unless C{--admin-listen
    none}) and the systemd readiness notice.
    """
    from sipcore.admin.service import SystemdNotify

    services: list[Any] = []
    if admin.listen:
        from twisted.internet.endpoints import serverFromString

        from sipcore.admin.api import AdminAPI, AdminParts, registrySamples
        from sipcore.admin.service import AdminService, readyChecks
        from sipcore.admin.status import RecentCloses

        parts = AdminParts(
            reactor=reactor,
            serverId=root.storeService.serverId,
            store=root.store,
            listing=listing,
            table=table,
            bus=root.bus,
            handlers=[handler.name for handler in root.handlers],
            queues=root.queues,
            transactions=core.transactions.stats,
            limits=lambda: {
                "maxConnections": table.limits.maxConnections,
                "maxConnectionsPerSource": table.limits.maxPerSource,
                "maxMessageSize": core.maxSize,
                "maxContacts": core.maxContacts,
            },
            metrics=lambda: registrySamples(root.metrics),
            reload=lambda: root.reloader.reload("admin API"),
            ready=readyChecks(root.listeners, storeAvailable, root.queues, usesDatabase),
            closes=RecentCloses(),
            nodes=root.cluster.listNodes if root.cluster is not None else None,
        )
        services.append(AdminService(serverFromString(reactor, admin.listen),
                                     AdminAPI(parts, admin.token), admin.listen,
                                     required=admin.required))
    services.append(SystemdNotify())
    return services


def _captureSettings(options: Options) -> Any:
    """
    The L{sipcore.capture.CaptureSettings} of C{--sip-trace} and C{--hep}.

    @raise usage.UsageError: for a bad collector address.
    """
    from sipcore.capture import CaptureSettings, parseHEPAddress

    hep = None
    if options["hep"]:
        try:
            hep = parseHEPAddress(options["hep"])
        except ValueError as e:
            raise usage.UsageError("--hep: {}".format(e)) from None
    return CaptureSettings(pcapPath=options["sip-trace"], hepAddress=hep,
                           hepAgentId=options["hep-agent-id"])


def _buildCapture(options: Options, reactor: Any) -> tuple[Any, list[Any]]:
    """
    The capture observer (C{None} when off) and its services.
    """
    settings = options.get("capture")
    if settings is None or not settings.enabled:
        return None, []
    from sipcore.capture import buildCapture

    return buildCapture(settings, reactor)


def _buildMetrics(options: Options, reactor: Any, metrics: Any) -> Any:
    """
    The C{GET /metrics} service serving C{metrics}, or C{None} without
    C{--metrics-listen}.
    """
    if not options["metrics-listen"]:
        return None
    from twisted.internet.endpoints import serverFromString

    from sipcore.metrics import MetricsService

    return MetricsService(serverFromString(reactor, options["metrics-listen"]), metrics)


def _buildPinger(options: Options, core: Any, hops: Any, resolver: Any) -> Any:
    """
    The L{sipcore.routes.ping.OptionsPinger} the routers' health checks
    send through the core's transaction layer.
    """
    from sipcore.routes.ping import OptionsPinger
    from sipcore.sip.recordroute import LocalAddresses

    domains = options["domain"]
    advertise = options["advertise-host"] or (domains[0] if domains else None)
    return OptionsPinger(core.transactions, hops, LocalAddresses(hops, core.domains, advertise),
                         fromHost=domains[0] if domains else "localhost", resolver=resolver)


def _buildRouters(options: Options, reactor: Any, handlers: list[Any]) -> Any:
    """
    The L{sipcore.routes.RoutingChain} of the handlers named by
    C{--router}, in that order.

    @raise HandlerConfigError: for a name that is not an enabled handler or
        whose handler is not a router, or an enabled router not named.
    """
    from sipcore.interfaces import IRouter
    from sipcore.routes import RoutingChain

    byName = {enabled.name: enabled.handler for enabled in handlers}
    routers = []
    for name in options["router"]:
        handler = byName.get(name)
        if handler is None:
            raise HandlerConfigError(
                "--router {}: no such enabled handler; enable it with --handler {}".format(
                    name, name))
        if not IRouter.providedBy(handler):
            raise HandlerConfigError("--router {}: the handler does not route "
                                     "(it does not provide IRouter)".format(name))
        routers.append((name, handler))
    unnamed = sorted(name for name, handler in byName.items()
                     if IRouter.providedBy(handler) and name not in options["router"])
    if unnamed:
        raise HandlerConfigError(
            "handler(s) {} route requests but are not named by --router; name them in the "
            "order they are asked (--router NAME)".format(", ".join(unnamed)))
    return RoutingChain(routers, reactor, options["routing-timeout"])


def _workerCluster() -> tuple[Any, str] | None:
    """
    The node directory and node URI of a worker of C{python -m
    sipcore.workers} (L{sipcore.workers.workerCluster}), or C{None}.

    @raise usage.UsageError: when what the supervisor passed is malformed.
    """
    from sipcore.workers import workerCluster

    try:
        return workerCluster()
    except ValueError as e:
        raise usage.UsageError(str(e)) from None


def _buildProxy(options: Options, reactor: Any, core: Any, store: Any, hops: Any,
                resolver: Any, routers: Any, metrics: Any, directory: Any = None,
                nodeURI: Any = None) -> Any:
    """
    Build the stateful proxy and make it the core's default handler.  A
    binding whose connection is gone is removed from the store by its
    connection (the rows of that dead conid only: a re-registration of the
    same contact over a new connection keeps its ruid and must survive);
    the proxy logs a failure.  The advertised host defaults to the first
    C{--domain} given.  In a cluster, C{directory} is the
    L{sipcore.cluster.INodeDirectory} of its members and C{nodeURI} gives
    this node's node URI; both C{None} otherwise.
    """
    from sipcore.sip.proxy import Proxy, ProxyPolicy
    from sipcore.sip.trust import TrustedPeers

    serverId = options["server-id"]

    def staleBinding(binding: Any) -> Any:
        return store.removeConnections(serverId, [binding.connectionId])

    domains = options["domain"]
    proxy = Proxy(
        core, store, reactor, hops,
        resolver=resolver,
        serverId=serverId,
        policy=ProxyPolicy(
            timerC=options["timer-c"],
            forwardForeign=bool(options["forward-foreign"]),
            advertiseHost=options["advertise-host"] or (domains[0] if domains else None),
            maxBranches=options["max-branches"],
            trustedPeers=TrustedPeers.fromStrings(options["trusted-peer"]),
            redirects=options["redirects"],
        ),
        staleBinding=staleBinding,
        metrics=metrics,
        routers=routers,
        directory=directory,
        nodeURI=nodeURI,
    )
    proxy.install()
    return proxy


def _outgoingSettings(options: Options) -> Any:
    """
    The L{sipcore.transport.outgoing.OutgoingSettings} of the options.

    @raise usage.UsageError: for an inconsistent value.
    """
    from sipcore.transport.outgoing import OutgoingSettings

    try:
        return OutgoingSettings(
            connectTimeout=options["connect-timeout"],
            idleTimeout=options["outgoing-idle-timeout"],
            tlsCAFile=options["tls-ca-file"] or None,
            tlsCertFile=options["tls-client-cert"] or None,
            tlsKeyFile=options["tls-client-key"] or None,
            maxSize=options["max-message-size"],
        )
    except ValueError as e:
        raise usage.UsageError(str(e)) from None


def _buildOutgoing(options: Options, reactor: Any, sink: Any, table: Any,
                   listeners: list[Any]) -> tuple[Any, Any]:
    """
    The connector of outgoing connections (their messages go to C{sink},
    as the listeners' do) and the RFC 3263 resolver.

    @raise usage.UsageError: when a TLS file cannot be loaded.
    """
    from sipcore.dns import Resolver, systemServers
    from sipcore.transport.outgoing import OutgoingConnector

    try:
        connector = OutgoingConnector(table, sink, reactor, options["outgoing"])
    except ValueError as e:
        raise usage.UsageError(str(e)) from None
    transports = ["tcp", "tls", "ws", "wss"]
    if any(listener.spec.transport == "udp" for listener in listeners):
        transports.insert(0, "udp")
    resolver = Resolver.fromServers(reactor, options["dns-server"] or systemServers(),
                                    transports=transports)
    return connector, resolver


# -- security ----------------------------------------------------------------

#: Source addresses the per-source limits skip unless --limit-exempt says
#: otherwise: loopback traffic comes from this host (tests, a local SBC).
DEFAULT_LIMIT_EXEMPT = ("127.0.0.1", "::1")


def _checkSecurityOptions(options: Options) -> None:
    """
    Validate the security options (C{postOptions}); load C{--auth-file}.

    @raise usage.UsageError: for a bad value.
    """
    from sipcore.sip.auth import ALGORITHMS, CredentialFile
    from sipcore.sip.registrar import CONTACTS_POLICIES

    if options["auth-db"] and not options["db"]:
        raise usage.UsageError("--auth-db needs --db")
    exempt = options["limit-exempt"] or list(DEFAULT_LIMIT_EXEMPT)
    options["limit-exempt"] = [a.lower() for a in exempt if a.lower() != "none"]
    options["auth-credentials"] = None
    if options["auth-file"]:
        if options["auth-db"]:
            raise usage.UsageError("give --auth-file or --auth-db, not both")
        try:
            options["auth-credentials"] = CredentialFile(options["auth-file"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
    algorithms = [a.strip().upper() for a in options["auth-algorithms"].split(",") if a.strip()]
    unknown = [a for a in algorithms if a not in ALGORITHMS]
    if unknown or not algorithms:
        raise usage.UsageError("--auth-algorithms: supported are {}".format(
            ", ".join(ALGORITHMS)))
    options["auth-algorithms"] = ",".join(algorithms)
    if options["nonce-lifetime"] <= 0:
        raise usage.UsageError("--nonce-lifetime must be positive")
    if options["auth-max-failures"] and not (
            options["auth-failure-window"] > 0 and options["auth-lockout"] > 0):
        raise usage.UsageError(
            "--auth-failure-window and --auth-lockout must be positive "
            "(--auth-max-failures 0 turns the per-account limit off)")
    if options["max-branches"] < 1:
        raise usage.UsageError("--max-branches must be at least 1")
    options["max-contacts-policy"] = options["max-contacts-policy"].strip().lower()
    if options["max-contacts-policy"] not in CONTACTS_POLICIES:
        raise usage.UsageError("--max-contacts-policy must be {}".format(
            " or ".join(CONTACTS_POLICIES)))
    options["server-header"] = options["server-header"].strip()
    if not options["server-header"].isprintable():
        raise usage.UsageError("--server-header must be printable text on one line")
    if options["rate-limit"] and options["rate-burst"] < 1:
        raise usage.UsageError("--rate-burst must be at least 1")
    if options["listen-backlog"] < 1:
        raise usage.UsageError("--listen-backlog must be at least 1")
    if options["ws-ping-interval"] and not options["ws-ping-timeout"]:
        raise usage.UsageError("--ws-ping-interval needs a positive --ws-ping-timeout")


def _largestMessage(options: Options) -> int:
    """
    The largest message any listener accepts: the core parses up to it.
    """
    sizes = [int(parseListen(spec).options.get("maxSize", 0)) for spec in options["listen"]]
    return max([options["max-message-size"]] + sizes)


def _buildRateLimiter(options: Options, reactor: Any, metrics: Any) -> Any:
    """
    The per-source request-rate limit (docs/security.rst), or C{None} with
    C{--rate-limit 0}.
    """
    if not options["rate-limit"]:
        return None
    from sipcore.sip.limits import RateLimiter

    return RateLimiter(
        reactor,
        rate=options["rate-limit"],
        burst=options["rate-burst"],
        overdraft=options["rate-overdraft"],
        exempt=options["limit-exempt"],
        logInterval=options["limit-log-interval"],
        serverHeader=options["server-header"],
        metrics=metrics,
    )


def _listenerOptions(options: Options, limiter: Any) -> dict[str, Any]:
    """
    The security controls of the listeners (docs/security.rst): message
    and handshake timeouts, WebSocket keepalive and Origin policy, the UDP
    early drop of rate-limited sources.

    @return: the keyword options for every L{ListenerService}.
    """
    return {
        "messageTimeout": options["message-timeout"],
        "handshakeTimeout": options["handshake-timeout"],
        "unregisteredIdleTimeout": options["unregistered-idle-timeout"],
        "maxHandshakeSize": options["ws-max-handshake-size"],
        "autoPingInterval": options["ws-ping-interval"],
        "autoPingTimeout": options["ws-ping-timeout"],
        "allowedOrigins": options["ws-origin"] or None,
        "originDomains": options["domain"] + (
            [options["advertise-host"].lower()] if options["advertise-host"] else []),
        "limiter": limiter,
    }


def _buildAuthentication(options: Options, reactor: Any, core: Any, dbPool: Any,
                         metrics: Any, directory: Any = None) -> Any:
    """
    Make digest authentication a guard of the core when a credential
    source is configured (docs/security.rst); failed authentications cost
    the source's rate bucket (C{core.limiter}, made by
    L{_buildRateLimiter}) and count for the account's guessing limit.  In
    a cluster (C{directory}, an L{sipcore.cluster.INodeDirectory}), what a
    member forwards to one of this node's connections is not challenged.

    @return: the L{sipcore.sip.auth.DigestAuthenticator}, or C{None}.
    """
    from twisted.logger import Logger

    from sipcore.cluster.delivery import NodeRoutes
    from sipcore.sip.auth import DigestAuthenticator, PostgresCredentials, secretFromOptions

    log = Logger(namespace="sipcore.security")
    credentials = options.get("auth-credentials")
    if options["auth-db"]:
        credentials = PostgresCredentials(dbPool)
    if credentials is None:
        log.warn("authentication is off (no --auth-file or --auth-db): "
                 "any client may register any address of record")
        return None
    methods = [m.strip().upper() for m in options["auth-methods"].split(",") if m.strip()]
    authenticator = DigestAuthenticator(
        credentials,
        reactor,
        isLocalDomain=core.isLocal,
        secret=secretFromOptions(options["auth-secret"]),
        methods=methods,
        algorithms=options["auth-algorithms"].split(","),
        nonceLifetime=options["nonce-lifetime"],
        limiter=core.limiter,
        logInterval=options["limit-log-interval"],
        maxFailures=options["auth-max-failures"],
        failureWindow=options["auth-failure-window"],
        lockout=options["auth-lockout"],
        serverHeader=options["server-header"],
        metrics=metrics,
        members=NodeRoutes(directory, reactor) if directory is not None else None,
    )
    core.addGuard(authenticator)
    log.info("digest authentication on for {methods}", methods=", ".join(methods))
    return authenticator


def makeService(options: Options) -> Any:
    """
    The twistd entry point.
    """
    if options["list-handlers"]:
        listHandlers()
        raise SystemExit(0)
    from twisted.internet import reactor

    # Fewer garbage collector passes.
    from sipcore.tuning import tuneGarbageCollector

    reactor.callWhenRunning(tuneGarbageCollector)
    try:
        return buildService(options, reactor, signals=True)
    except HandlerError as e:
        raise SystemExit("sipcore: " + str(e)) from e


__all__ = ["Options", "buildService", "makeService", "HandlerConfigError", "selectHandlers"]
