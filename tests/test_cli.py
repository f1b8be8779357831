"""
Tests for L{sipcore.cli}, the C{sipcore} command.

The command runs as a subprocess (C{python -m sipcore.cli}, what the console
script calls); the database tests use a private schema of the test server
(see L{tests.dbhelpers}).
"""

from __future__ import annotations

import io
import os
import sys

from twisted.internet import reactor, utils
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipcore import cli
from sipcore.db.location import locationTableVersion
from tests.dbhelpers import connect, createTestSchema
from tests.serverhelpers import SIPCORE_PATH


async def runCommand(*args: str) -> tuple[str, str, int]:
    """
    Run C{python -m sipcore.cli ARGS} on the sipcore under test.

    @return: C{(stdout, stderr, exit status)}.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [SIPCORE_PATH, env.get("PYTHONPATH", "")] if p)
    out, err, code = await utils.getProcessOutputAndValue(
        sys.executable, ["-m", "sipcore.cli", *args], env=env, path=SIPCORE_PATH, reactor=reactor
    )
    return out.decode("utf-8"), err.decode("utf-8"), code


class ParserTests(SynchronousTestCase):
    """
    The command line of C{sipcore}.
    """

    def setUp(self) -> None:
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def test_dbInit(self) -> None:
        """
        C{sipcore db init --db DSN} selects the command with the DSN and the
        default connect timeout.
        """
        options = cli.parser().parse_args(["db", "init", "--db", "dbname=sip"])
        self.assertEqual((options.command, options.dbCommand), ("db", "init"))
        self.assertEqual(options.db, "dbname=sip")
        self.assertEqual(options.connect_timeout, cli.DEFAULT_CONNECT_TIMEOUT)

    def test_dbRequired(self) -> None:
        """
        C{--db} is required: without it the command exits with status 2 and
        says so.
        """
        e = self.assertRaises(SystemExit, cli.parser().parse_args, ["db", "init"])
        self.assertEqual(e.code, 2)
        self.assertIn("--db", self.stderr.getvalue())

    def test_commandRequired(self) -> None:
        """
        Without a command, C{sipcore} exits with status 2.
        """
        e = self.assertRaises(SystemExit, cli.main, [])
        self.assertEqual(e.code, 2)


class DbInitWithoutServerTests(TestCase):
    """
    C{sipcore db init} fails clearly when it cannot work.
    """

    async def test_unreachable(self) -> None:
        """
        With nothing listening at the DSN, the command exits with status 1
        and a one-line message, without a traceback and without echoing the
        password.
        """
        out, err, code = await runCommand(
            "db", "init", "--db", "host=127.0.0.1 port=1 dbname=x user=x password=hunter2"
        )
        self.assertEqual(code, 1)
        self.assertEqual(out, "")
        self.assertTrue(err.startswith("sipcore: cannot connect to the database: "), err)
        self.assertNotIn("Traceback", err)
        self.assertNotIn("hunter2", err)

    async def test_invalidDsn(self) -> None:
        """
        A DSN that is not a libpq connection string is a usage error
        (status 2), reported without echoing it.
        """
        out, err, code = await runCommand("db", "init", "--db", "nonsense password=hunter2")
        self.assertEqual(code, 2)
        self.assertIn("not a valid libpq connection string", err)
        self.assertNotIn("hunter2", err)


class DbInitTests(TestCase):
    """
    C{sipcore db init} against the test server.
    """

    async def test_idempotent(self) -> None:
        """
        The first run creates the schema and says so; the second finds it
        and changes nothing; both exit with status 0.
        """
        schema = await createTestSchema(self, withLocation=False)
        out, err, code = await runCommand("db", "init", "--db", schema.dsn)
        self.assertEqual((out, err, code), ("created location schema (version 9)\n", "", 0))
        out, err, code = await runCommand("db", "init", "--db", schema.dsn)
        self.assertEqual(
            (out, err, code),
            ("location schema already present (version 9), nothing changed\n", "", 0),
        )
        conn = await connect(reactor, schema.dsn)
        try:
            self.assertEqual(await locationTableVersion(conn), 9)
        finally:
            conn.close()

    async def test_otherVersion(self) -> None:
        """
        When the location table is at another version, the command exits
        with status 1, names both versions and changes nothing.
        """
        schema = await createTestSchema(self)
        await schema.admin.runOperation(
            "UPDATE {}.version SET table_version = 7 WHERE table_name = %s".format(schema.name),
            ("location",),
        )
        out, err, code = await runCommand("db", "init", "--db", schema.dsn)
        self.assertEqual(code, 1)
        self.assertIn("version 7, sipcore needs version 9", err)
        rows = await schema.admin.runQuery(
            "SELECT table_version FROM {}.version WHERE table_name = %s".format(schema.name),
            ("location",),
        )
        self.assertEqual(rows, [(7,)])

    async def test_subscriber(self) -> None:
        """
        With C{--subscriber} the command also creates Kamailio's subscriber
        table and says so; a second run finds it and says that.
        """
        schema = await createTestSchema(self, withLocation=False)
        said = []
        for _ in range(2):
            out, err, code = await runCommand("db", "init", "--subscriber", "--db", schema.dsn)
            self.assertEqual((err, code), ("", 0))
            said.append([line for line in out.splitlines() if "subscriber" in line])
        self.assertEqual(said, [
            ["created subscriber table (version 7)"],
            ["subscriber table already present (version 7), nothing changed"],
        ])
        rows = await schema.admin.runQuery(
            "SELECT table_version FROM {}.version WHERE table_name = %s".format(schema.name),
            ("subscriber",),
        )
        self.assertEqual(rows, [(7,)])
