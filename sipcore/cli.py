# -*- test-case-name: tests.test_cli -*-
"""
The C{sipcore} command (console script): administrative commands that are not
the server itself (the server runs with C{twistd sipcore}).

  - C{sipcore db init --db DSN}: create Kamailio's C{location} schema
    (version 9) in the database, unless it is already there.
  - C{sipcore ul dump|show AOR|rm AOR [RUID]}, C{sipcore conn list|close
    CONID}, C{sipcore stats}, C{sipcore handlers}, C{sipcore reload},
    C{sipcore nodes}: ask a
    running server's admin API (L{sipcore.admin.api}) and print a table, or
    its JSON with C{--json}.

Exit status: C{0} on success, C{1} when the database or the admin API cannot
be reached or refuses, C{2} for a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from twisted.internet import defer, task

__all__ = ["main", "parser"]

#: Seconds C{sipcore db init} waits for the connection to open.
DEFAULT_CONNECT_TIMEOUT = 10.0


def parser() -> argparse.ArgumentParser:
    """
    @return: the argument parser of the C{sipcore} command.
    """
    top = argparse.ArgumentParser(prog="sipcore", description="sipcore administrative commands.")
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    db = commands.add_parser("db", help="manage the location database")
    dbCommands = db.add_subparsers(dest="dbCommand", metavar="DBCOMMAND")
    dbCommands.required = True
    init = dbCommands.add_parser(
        "init",
        help="create Kamailio's location schema (version 9) if it is missing",
        description=(
            "Create Kamailio's usrloc location table (version 9), location_attrs "
            "and, when missing, the version table, in the first schema of the "
            "connection's search_path.  Does nothing if the location table is "
            "already there at version 9; fails if it is there at another version."
        ),
    )
    init.add_argument(
        "--db",
        metavar="DSN",
        required=True,
        help=(
            "libpq connection string or URI, for example 'host=127.0.0.1 dbname=sip user=sipcore'"
        ),
    )
    init.add_argument(
        "--subscriber",
        action="store_true",
        help="also create Kamailio's subscriber table (version 7) for digest "
        "authentication with --auth-db, if it is missing",
    )
    init.add_argument(
        "--connect-timeout",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT,
        help="give up connecting after this many seconds (default: %(default)s)",
    )
    _adminParsers(commands)
    return top


def _adminParsers(commands: Any) -> None:
    """
    Add the admin API's commands to the C{sipcore} parser.
    """
    from sipcore.admin.client import DEFAULT_URL, URL_ENVIRONMENT

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--admin", metavar="URL", default=None,
        help="the admin API (default: ${} or {})".format(URL_ENVIRONMENT, DEFAULT_URL))
    common.add_argument(
        "--token-file", metavar="FILE", default="",
        help="file holding the bearer token (default: $SIPCORE_ADMIN_TOKEN)")
    common.add_argument("--json", action="store_true", help="print the JSON answer")
    common.add_argument("--timeout", metavar="SECONDS", type=float, default=10.0,
                        help="give up after this many seconds (default: %(default)s)")

    ul = commands.add_parser("ul", help="registrations (user location)")
    ulCommands = ul.add_subparsers(dest="ulCommand", metavar="ULCOMMAND")
    ulCommands.required = True
    dump = ulCommands.add_parser("dump", parents=[common], help="list registrations")
    dump.add_argument("--domain", help="only this domain")
    dump.add_argument("--user", help="only this user part")
    dump.add_argument("--conid", type=int, help="only bindings of this connection")
    dump.add_argument("--offset", type=int, default=0, help="skip this many")
    dump.add_argument("--limit", type=int, default=100, help="at most this many (1-1000)")
    show = ulCommands.add_parser("show", parents=[common], help="one address of record")
    show.add_argument("aor", metavar="AOR", help="user@domain")
    rm = ulCommands.add_parser("rm", parents=[common],
                               help="remove an address of record's bindings, or one")
    rm.add_argument("aor", metavar="AOR", help="user@domain")
    rm.add_argument("ruid", metavar="RUID", nargs="?", help="only this binding")

    conn = commands.add_parser("conn", help="stream connections")
    connCommands = conn.add_subparsers(dest="connCommand", metavar="CONNCOMMAND")
    connCommands.required = True
    connList = connCommands.add_parser("list", parents=[common], help="live connections")
    connList.add_argument("--transport", choices=["tcp", "tls", "ws", "wss"])
    close = connCommands.add_parser(
        "close", parents=[common],
        help="close a connection (its bindings are removed as for any close)")
    close.add_argument("conid", metavar="CONID", type=int)

    commands.add_parser("stats", parents=[common], help="every figure of the server")
    commands.add_parser("handlers", parents=[common], help="handlers and job queues")
    commands.add_parser("transactions", parents=[common], help="transactions and limits")
    commands.add_parser("reload", parents=[common], help="reload what can be reloaded")
    commands.add_parser("nodes", parents=[common],
                        help="the nodes of the cluster (the node table, with --db)")


def _firstLine(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


async def _dbInit(reactor: Any, options: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """
    Connect, run L{sipcore.db.location.initSchema} (and
    L{sipcore.db.subscriber.initSubscriberSchema}), report.

    @return: the exit status.
    """
    import psycopg2
    from txpostgres import txpostgres

    from sipcore.db.location import LOCATION_TABLE_VERSION, SchemaVersionMismatch, initSchema
    from sipcore.db.subscriber import SUBSCRIBER_TABLE_VERSION, initSubscriberSchema

    try:
        psycopg2.extensions.parse_dsn(options.db)
    except psycopg2.ProgrammingError:
        err.write("sipcore: --db is not a valid libpq connection string\n")
        return 2

    conn = txpostgres.Connection(reactor)
    connecting = conn.connect(options.db)
    # psycopg2's asynchronous connect ignores libpq's connect_timeout, so
    # bound the attempt ourselves: closing the connection fails the attempt.
    timer = reactor.callLater(options.connect_timeout, conn.close)
    try:
        await connecting
    except Exception as e:
        err.write("sipcore: cannot connect to the database: {}\n".format(_firstLine(e)))
        return 1
    finally:
        if timer.active():
            timer.cancel()

    try:
        created = await initSchema(conn)
        subscriberCreated = options.subscriber and await initSubscriberSchema(conn)
    except SchemaVersionMismatch as e:
        err.write("sipcore: {}\n".format(e))
        return 1
    except Exception as e:
        err.write("sipcore: creating the schema failed: {}\n".format(_firstLine(e)))
        return 1
    finally:
        conn.close()
    if subscriberCreated:
        out.write("created subscriber table (version {})\n".format(SUBSCRIBER_TABLE_VERSION))
    elif options.subscriber:
        out.write("subscriber table already present (version {}), nothing changed\n".format(
            SUBSCRIBER_TABLE_VERSION))
    if created:
        out.write("created location schema (version {})\n".format(LOCATION_TABLE_VERSION))
    else:
        out.write(
            "location schema already present (version {}), nothing changed\n".format(
                LOCATION_TABLE_VERSION
            )
        )
    return 0


def _run(reactor: Any, options: argparse.Namespace) -> defer.Deferred[None]:
    async def run() -> None:
        status = await _dbInit(reactor, options, sys.stdout, sys.stderr)
        sys.stdout.flush()
        raise SystemExit(status)

    return defer.Deferred.fromCoroutine(run())


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    Entry point of the C{sipcore} console script.

    @param argv: the arguments (without the program name); C{sys.argv[1:]}
        when C{None}.
    @raise SystemExit: always, with the exit status.
    """
    options = parser().parse_args(argv)
    if options.command != "db":
        from sipcore.admin.client import run

        raise SystemExit(run(options, sys.stdout, sys.stderr))
    task.react(_run, (options,))
    raise SystemExit(0)  # pragma: no cover (react always exits)


if __name__ == "__main__":
    main()
