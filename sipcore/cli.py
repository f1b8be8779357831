# -*- test-case-name: tests.test_cli -*-
"""
The C{sipcore} command (console script): administrative commands that are not
the server itself (the server runs with C{twistd sipcore}).

  - C{sipcore db init --db DSN}: create Kamailio's C{location} schema
    (version 9) in the database, unless it is already there.

Exit status: C{0} on success, C{1} when the database cannot be reached or
refuses, C{2} for a usage error.
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
    return top


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
        if options.subscriber:
            await initSubscriberSchema(conn)
    except SchemaVersionMismatch as e:
        err.write("sipcore: {}\n".format(e))
        return 1
    except Exception as e:
        err.write("sipcore: creating the schema failed: {}\n".format(_firstLine(e)))
        return 1
    finally:
        conn.close()
    if options.subscriber:
        out.write("subscriber table present (version {})\n".format(SUBSCRIBER_TABLE_VERSION))
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
    # Only one command so far: "db init".
    task.react(_run, (options,))
    raise SystemExit(0)  # pragma: no cover (react always exits)


if __name__ == "__main__":
    main()
