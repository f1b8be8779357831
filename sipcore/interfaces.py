# -*- test-case-name: tests.test_packaging,tests.test_plugins -*-
"""
The public contracts of sipcore.

Every zope Interface of the project lives here and nothing else does.  The
pipeline they describe::

    transport (IFlow) -> IMessageSink -> registrar / proxy -> ILocationStore
    transactions -> ITransactionUser / IClientTransactionUser
    proxy -> IHopConnector -> transport (IFlow)
    transport -> ConnectionTable -> IEventBus -> IEventHandler (made by IHandlerPlugin)
"""

from zope.interface import Attribute, Interface

# ---------------------------------------------------------------------------
# Transports


class IFlow(Interface):
    """
    Where a SIP message came from and how to answer it: one stream connection
    (TCP, TLS, WS, WSS) or one UDP peer address seen on one listening port.
    """

    transport = Attribute(
        "C{str}: one of C{'udp'}, C{'tcp'}, C{'tls'}, C{'ws'}, C{'wss'}."
    )
    conid = Attribute(
        "C{int} connection id of a stream flow (positive, never reused in this "
        "process), or C{None} for UDP."
    )
    local = Attribute("C{(host, port)} of the local end, host as text.")
    remote = Attribute("C{(host, port)} of the remote end, host as text.")
    reliable = Attribute("C{bool}: C{True} for stream transports (no retransmissions).")

    def send(data):
        """
        Send one complete SIP message (C{bytes}) over this flow.

        Never blocks and never raises: a flow whose connection has gone
        silently drops the data.

        @return: C{True} if the data was handed to a live transport, C{False}
            if the flow is closed.
        """

    def sendTo(data, address):
        """
        Send one complete SIP message to another C{(host, port)} through the
        same socket (UDP only; stream flows ignore C{address} and use their
        connection).

        @return: C{True} if handed to the transport.
        """

    def close():
        """
        Close the flow (streams); a no-op for UDP.  The connection's close
        event fires as for any other close.
        """


class IStreamFlow(IFlow):
    """
    The flow of one stream connection (TCP, TLS, WS, WSS), as the
    L{sipcore.transport.connections.ConnectionTable} holds it.
    """

    def abort():
        """
        Drop the connection at once, without a graceful close.  The
        connection's close event fires as for any other close.
        """

    def bound(until):
        """
        A binding for this connection was saved, valid until C{until}
        (seconds on the server's clock): the connection keeps the idle
        timeout of a registered connection until then.
        """


class IMessageSink(Interface):
    """
    What transports feed: the SIP core.  Transports frame bytes into
    messages and hand them on; they never parse beyond framing.
    """

    def messageReceived(data, flow):
        """
        One complete SIP message arrived.

        @param data: the message's bytes (start line, headers, body).
        @param flow: the L{IFlow} it came on.
        @return: C{None}.  Never raises.
        """

    def messageRejected(data, reason, flow):
        """
        The transport could not frame a message (oversized, impossible
        Content-Length, garbage).  The sink answers C{400} when C{data}
        holds enough headers to build a response, and counts the drop
        otherwise.  Stream transports close the connection afterwards.

        @param data: the bytes received so far for this message (possibly
            only a prefix).
        @param reason: C{str}, a human-readable reason.
        @param flow: the L{IFlow}.
        @return: C{None}.  Never raises.
        """


class IMessageObserver(Interface):
    """
    Sees every SIP message a transport receives or sends (the capture of
    L{sipcore.capture}).  Called in the reactor thread for each message:
    it must return at once and never raise.
    """

    def messageSeen(data, transport, source, destination):
        """
        One message crossed a transport.

        @param data: the message's bytes (for TLS and WSS, decrypted).
        @param transport: C{"udp"}, C{"tcp"}, C{"tls"}, C{"ws"} or C{"wss"}.
        @param source: C{(host, port)} it came from (ours when sent).
        @param destination: C{(host, port)} it went to (ours when
            received).
        @return: C{None}.
        """


class IHopConnector(Interface):
    """
    The transport layer as the SIP layer sends through it: the flow that
    reaches a next hop, and the addresses the server listens on.  L{flowTo}
    opens no connection; L{openFlow} opens one when none is open.
    """

    def connection(conid):
        """
        The live stream connection C{conid} of this node.

        @param conid: a connection id (C{int}).
        @return: its L{IFlow}, or C{None} when it has closed.
        """

    def flowTo(transport, host, port):
        """
        A flow that reaches C{(transport, host, port)}: for UDP, a flow of
        a UDP listener whose C{send} goes to that address; for a stream
        transport, a live connection of that transport to that address.

        @param transport: C{'udp'}, C{'tcp'}, C{'tls'}, C{'ws'} or C{'wss'}.
        @param host: the hop's address as text (lower case).
        @param port: the hop's port (C{int}).
        @return: an L{IFlow}, or C{None} when the hop cannot be reached now
            (no UDP listener, no open connection to it).
        """

    def openFlow(hop, serverName=None):
        """
        A flow that reaches a next hop, opening a connection to it when
        there is none: the flow L{flowTo} finds, else (TCP, TLS, WS, WSS) a new
        outgoing connection.

        @param hop: a L{sipcore.sip.routing.NextHop}.
        @param serverName: the name a TLS server must prove (and the SNI
            sent); the hop's address when C{None}.
        @return: a L{Deferred} firing with the L{IFlow}, or failing with
            L{sipcore.transport.outgoing.ConnectFailed} when the hop cannot
            be reached (no UDP listener; connection refused, timed out, TLS
            verification failed; no outgoing connections configured).
        """

    def listening():
        """
        Where the server listens now.

        @return: a C{tuple} of C{(transport, host, port)} per listener that
            has a bound address, the host as bound (C{'0.0.0.0'} or C{'::'}
            for the wildcard address).  Once every listener has an address
            the same tuple object is returned until the listeners change,
            so a caller may cache what it derives from it by identity.
        """


# ---------------------------------------------------------------------------
# Timers


class ITimer(Interface):
    """
    One timer started by an L{ITimerQueue}: it fires once, unless it is
    cancelled first.  Its delay is fixed when it starts.
    """

    def getTime():
        """
        @return: when the timer fires (or fired), in the queue's C{seconds}.
        """

    def active():
        """
        @return: C{True} until the timer has fired or was cancelled.
        """

    def cancel():
        """
        Stop the timer from firing.

        @raise twisted.internet.error.AlreadyCancelled: if it was cancelled.
        @raise twisted.internet.error.AlreadyCalled: if it has fired.
        """


class ITimerQueue(Interface):
    """
    Where the transaction layer and the event bus start their timers: the
    C{seconds} and C{callLater} of L{twisted.internet.interfaces.IReactorTime}
    without the rest (L{sipcore.timers.TimerQueues}).
    """

    def seconds():
        """
        @return: the current time, in seconds (a C{float}).
        """

    def callLater(delay, callable, *args, **kwargs):
        """
        Call C{callable(*args, **kwargs)} once, C{delay} seconds from now.

        @return: the L{ITimer}.
        """


# ---------------------------------------------------------------------------
# Transactions


class ITransactionUser(Interface):
    """
    What the transaction layer and its server transactions tell their
    transaction user (the SIP core), RFC 3261 section 17.2.  Each call but
    C{ackReceived} returns C{None}; an exception it raises is logged by the
    transaction and goes no further.
    """

    def ackReceived(request, flow):
        """
        An C{ACK} that no INVITE server transaction absorbed: the C{ACK}
        for a 2xx (a transaction of its own), one matching nothing, or one
        received in the Accepted state.

        @param request: the C{ACK} L{sipcore.message.Request}.
        @param flow: the L{IFlow} it arrived on.
        @return: C{True} when it belongs to a dialog (it was forwarded
            along the dialog's route); C{False} makes it a stray ACK.
        """

    def ackTimeout(transaction):
        """
        No C{ACK} came for the final response of an INVITE server
        transaction (timer H).
        """

    def unanswered(transaction):
        """
        A non-INVITE server transaction ended without a final response
        (its user never answered within 2*64*T1).
        """

    def transportError(transaction):
        """
        The flow refused a response of the server transaction; the
        transaction is terminated.
        """


class IClientTransactionUser(Interface):
    """
    What a client transaction tells the user that sent its request
    (RFC 3261 section 17.1).  Each call returns C{None}; an exception it
    raises is logged by the transaction and goes no further.
    """

    def responseReceived(response, transaction):
        """
        A response passed up by the client transaction (every provisional
        and final response, 2xx retransmissions included for INVITE).

        @param response: the L{sipcore.message.Response}.
        @param transaction: the client transaction.
        """

    def timeout(transaction):
        """
        No final response came in time (timer B or F); the transaction is
        terminated.
        """

    def transportError(transaction):
        """
        The flow refused the request (or the C{ACK}); the transaction is
        terminated.
        """


# ---------------------------------------------------------------------------
# Events


class IEventBus(Interface):
    """
    Delivers connection events to the handlers that subscribed to them.
    """

    def subscribe(handler):
        """
        Deliver the events named in C{handler.events} to C{handler.handle}.

        @param handler: what to deliver to: C{name}, C{events},
            C{priority}, C{timeout}, C{concurrency}, C{backlog} (each of the
            last three C{None} for the bus default) and C{handle(event)}, as
            a L{sipcore.plugin.EnabledHandler} has them.
        """

    def unsubscribe(handler):
        """
        Stop delivering events to C{handler}.
        """

    def fire(event):
        """
        Deliver C{event} to every handler subscribed to C{event.name}.

        Returns at once, never raises, never waits.  A handler's exception
        or failed Deferred is logged with the handler's name and the event,
        and counted.

        @return: a L{Deferred} that fires with C{None} when every handler is
            done (or timed out); it never fails.  Transports never wait on it.
        """

    def drain():
        """
        Wait for every handler invocation in flight or queued (used at
        shutdown).

        @return: a L{Deferred} that fires with C{None} when none is left; it
            never fails.
        """


class IHandlerPlugin(Interface):
    """
    A handler plugin: an immutable descriptor found with
    C{twisted.plugin.getPlugins(IHandlerPlugin)} and enabled by name, as
    C{twistd} finds an L{twisted.application.service.IServiceMaker}.

    A plugin module must stay light: the descriptor names its
    implementation and imports it only in L{makeOptions} and L{makeHandler}.
    """

    name = Attribute("C{str}: unique name, used with C{--handler NAME}.")
    description = Attribute("C{str}: one line for C{--list-handlers}.")
    events = Attribute("C{tuple} of C{str}: the event names it handles.")
    priority = Attribute(
        "C{int}: lower runs first among handlers of the same event (then by name)."
    )
    apiVersion = Attribute("C{int}: the handler API version it was written for.")
    timeout = Attribute(
        "C{float} seconds the bus waits for one event, or C{None} for the bus default."
    )
    concurrency = Attribute("C{int} events handled at once, or C{None} for the bus default.")
    backlog = Attribute(
        "C{int} events that may wait beyond C{concurrency}, or C{None} for the bus default."
    )
    implementation = Attribute(
        "C{str}: the dotted name of the implementation, for C{--list-handlers}."
    )

    def makeOptions():
        """
        Import the implementation and make an instance of the
        L{twisted.python.usage.Options} subclass that declares the
        handler's options.

        @return: the unparsed options.
        @raise sipcore.plugin.HandlerImportError: when the implementation
            cannot be imported.
        """

    def makeHandler(context):
        """
        Import the implementation and build a new handler; every call
        builds another one.

        @param context: the L{IHandlerContext} the handler is made with.
        @return: a new L{IEventHandler}.
        @raise sipcore.plugin.HandlerError: when the implementation cannot
            be imported or refuses the context.
        """


class IHandlerContext(Interface):
    """
    What sipcore gives L{IHandlerPlugin.makeHandler}.
    """

    apiVersion = Attribute("C{int}: the handler API version this sipcore implements.")
    handlerName = Attribute("C{str}: the name of the handler this context was made for.")
    serverId = Attribute("C{int}: this node's C{server_id}.")
    reactor = Attribute("The reactor (provides C{IReactorTime} at least).")
    store = Attribute("The L{ILocationStore} in use.")
    dbPool = Attribute(
        "The database's L{IDatabasePool} (a L{sipcore.db.DatabasePool}), or "
        "C{None} when sipcore runs without a database.  sipcore opens and "
        "closes it; handlers only run statements on it."
    )
    options = Attribute(
        "This handler's options: an instance of its plugin's C{options} class, "
        "parsed (a C{dict} of option name to value)."
    )
    writes = Attribute(
        "The L{sipcore.location.ordering.PendingWrites} tracker: location "
        "writes in flight per connection id."
    )
    pinger = Attribute(
        "An L{IPinger} that sends C{OPTIONS} through the proxy's transaction "
        "layer (health checks), or C{None} when sipcore has no proxy."
    )

    def makeJobQueue(name, runner, **kwargs):
        """
        Build a L{sipcore.jobs.JobQueue} that sipcore starts, drains at
        shutdown and reports in its metrics.

        @param name: C{str}, unique among queues.
        @param runner: callable taking a C{list} of items and returning a
            L{Deferred}; a failure keeps the items queued for retry.
        @return: the L{sipcore.jobs.JobQueue}.
        """


class IRouter(Interface):
    """
    A routing hook: decides where an initial request goes that is not for
    a registered local user.  A handler made by a handler plugin may
    provide it; sipcore consults the routers named by C{--router}, in
    that order (see C{docs/routing.rst}).
    """

    def route(request):
        """
        Decide where one initial request goes.

        @param request: a L{sipcore.routes.RoutingRequest} (read-only: the
            request, its Request-URI and the caller).
        @return: a L{Deferred} (or a plain value) firing with a
            L{sipcore.routes.RouteTargets} (forward there), a
            L{sipcore.routes.RouteAnswer} (answer the caller with it), or
            C{None} (not this router's request: the next router decides).
            A failure, or no answer within C{--routing-timeout}, gives the
            caller C{500} and logs one line naming the router.
        """


class IReloadable(Interface):
    """
    A handler whose configuration can be read again while it runs: on
    C{SIGHUP} and the admin API's reload, sipcore calls L{reload} of every
    enabled handler that provides it (see C{docs/operations.rst}).
    """

    def reload():
        """
        Read the configuration again and use it from now on.

        @return: a short description of what was read (C{str}), for the
            reload's log line.
        @raise ValueError: (or C{OSError}) when it cannot be read or is
            malformed, with a message saying where and why; the handler
            keeps what it had.
        """


class IPinger(Interface):
    """
    Sends C{OPTIONS} requests to check that a SIP server answers (the
    dispatcher's health checks).
    """

    def ping(uri):
        """
        Send one C{OPTIONS} to C{uri} (a L{sipcore.message.URI}) at the next
        hop it names.

        @return: a L{Deferred} firing with C{True} when any final response
            came back, C{False} when none came (transaction timeout, transport
            error, or no flow reaches the hop); it never fails.
        """


class IEventHandler(Interface):
    """
    A running handler, made by L{IHandlerPlugin.makeHandler} for one
    service: started, handed the events its plugin subscribes to, stopped.
    """

    def start():
        """
        Open the handler's resources.

        @return: C{None} or a L{Deferred} that fires when the handler is
            ready; a failure stops sipcore from starting.
        """

    def handle(event):
        """
        Handle one event.

        @param event: a read-only L{sipcore.events.ConnectionEvent} or
            L{sipcore.events.RegistrationEvent}.
        @return: C{None}, a L{Deferred} or a coroutine; an exception or
            failure is logged and counted by the bus and never reaches the
            transport.
        """

    def stop():
        """
        Release the handler's resources at shutdown.

        @return: C{None} or a L{Deferred} that fires when done.
        """


# ---------------------------------------------------------------------------
# Location


class ILocationStore(Interface):
    """
    Where bindings (registered contacts) live.  Every method returns a
    L{Deferred}; failures are L{sipcore.location.StoreUnavailable} when the
    backing database cannot be reached, so callers can answer C{500}/C{503}
    and retry.
    """

    def start():
        """
        Open the store (connect a pool).

        @return: L{Deferred} firing with C{None}; it does not fail when the
            database is away (the store keeps trying to connect).
        """

    def close():
        """
        Close the store.

        @return: L{Deferred} firing with C{None}.
        """

    def lookup(aor, now):
        """
        The unexpired bindings of an address of record.

        @param aor: C{str}, C{"user@domain"} (lower-cased domain).
        @param now: C{float} POSIX time.
        @return: L{Deferred} firing with a C{list} of
            L{sipcore.location.Binding}, highest q first.
        """

    def lookupMany(aors, now):
        """
        The unexpired bindings of several addresses of record at once.

        @param aors: an iterable of C{str} addresses of record.
        @param now: C{float} POSIX time.
        @return: L{Deferred} firing with a C{dict} from each address of
            record that has bindings to its C{list} of them, highest q
            first.
        """

    def save(bindings):
        """
        Insert or replace bindings, keyed by C{ruid}.

        @param bindings: a sequence of L{sipcore.location.Binding}.
        @return: L{Deferred} firing with C{None} once every binding is
            durable (committed, for a database store).
        """

    def remove(ruids):
        """
        Remove bindings by C{ruid}.

        @return: L{Deferred} firing with the C{int} number removed.
        """

    def removeConnections(serverId, conids):
        """
        Remove every binding of C{serverId} bound to one of C{conids}.

        @param serverId: C{int}.
        @param conids: a sequence of C{int}.
        @return: L{Deferred} firing with the C{int} number removed.
        """

    def removeExpired(now):
        """
        Remove every binding whose expiry is at or before C{now}.

        @return: L{Deferred} firing with the C{list} of the L{Binding}s
            removed, ordered by C{ruid}.
        """

    def purgeServer(serverId, before):
        """
        Remove every binding of C{serverId} that is bound to a connection
        (a C{connection_id} greater than zero) and was last written before
        C{before}.  Run at start: connection ids do not survive a restart,
        and bindings written since the start (C{before}) are live.

        @param serverId: C{int}.
        @param before: C{float} POSIX time, the process's start.
        @return: L{Deferred} firing with the C{int} number removed.
        """


# ---------------------------------------------------------------------------
# Database


class IBindingListing(Interface):
    """
    A location store that can list its bindings page by page (the admin
    API's registrations list).
    """

    def listBindings(now, query):
        """
        The unexpired bindings (at POSIX time C{now}) that
        C{query} (a L{sipcore.location.query.BindingQuery}) selects, in
        user part, domain, C{ruid} order, from C{query.offset}, at most
        C{query.limit}.

        @return: a L{Deferred} firing with a C{list} of
            L{sipcore.location.binding.Binding}; it fails with
            L{sipcore.location.StoreUnavailable} when the store cannot
            answer.
        """


class IDatabasePool(Interface):
    """
    The PostgreSQL database as its users see it (the store, the subscriber
    credentials, handlers with tables of their own): the calls of a
    C{txpostgres.ConnectionPool}, each sent on one pooled connection.
    Statements are fixed text with C{%s} parameters.

    Each call's L{Deferred} fails with L{sipcore.db.DatabaseUnavailable}
    when the database cannot answer now (not started, down, reconnecting,
    the connection lost during the call, no answer in time, cancelled by
    C{statement_timeout}), and with the C{psycopg2} error when the database
    refuses the statement.
    """

    available = Attribute("C{bool}: whether a connection is open and believed alive.")

    def runQuery(statement, params=None):
        """
        Run one statement.

        @return: L{Deferred} firing with the C{list} of rows.
        """

    def runOperation(statement, params=None):
        """
        Run one statement and drop its result.

        @return: L{Deferred} firing with C{None}.
        """

    def runInteraction(interaction, *args, **kwargs):
        """
        Run C{interaction(cursor, *args, **kwargs)} in one transaction:
        committed when it succeeds (or its L{Deferred} fires), rolled back
        when it fails.

        @return: L{Deferred} firing with what C{interaction} returned.
        """


# ---------------------------------------------------------------------------
# Authentication


class ICredentialSource(Interface):
    """
    Where digest authentication finds subscribers (Kamailio's C{subscriber}
    table, a file, memory).
    """

    def lookup(username, domain):
        """
        Find a subscriber.

        @param username: C{str}, the user part.
        @param domain: C{str}, the realm (lower-cased domain).
        @return: L{Deferred} firing with the L{sipcore.sip.auth.Subscriber},
            or C{None} if there is none; failing with
            L{sipcore.sip.auth.CredentialsUnavailable} when the source cannot
            be read.
        """
