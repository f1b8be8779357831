# -*- test-case-name: tests.test_config -*-
"""
Tests for L{sipcore.config}: the C{--config FILE} of C{twistd sipcore},
and for docs/configuration.rst keeping up with the options.
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from sipcore.config import NOT_IN_FILE, configArguments, readConfig
from sipcore.plugin import HandlerConfigError
from sipcore.tap import Options, buildService
from sipcore.testing import UDPMemoryReactor

ROOT = Path(__file__).resolve().parent.parent


class ConfigTestCase(SynchronousTestCase):
    """
    Writes configuration files into the test's temporary directory.
    """

    def write(self, text: str) -> str:
        path = self.mktemp() + ".ini"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(textwrap.dedent(text))
        return path

    def parse(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(list(args))
        return options

    def refused(self, text: str, *args: str) -> str:
        """
        The message of the usage error for a file holding C{text}.
        """
        path = self.write(text)
        e = self.assertRaises(usage.UsageError, self.parse, "--config", path, *args)
        message = str(e)
        self.assertTrue(message.startswith(path), message)
        return message[len(path) :]


class ReadTests(ConfigTestCase):
    """
    L{readConfig} reads the sections and refuses broken files.
    """

    def test_sections(self) -> None:
        """
        The C{[sipcore]} keys and each C{[handler:NAME]} section are read,
        keys keep their case and values are literal (no interpolation).
        """
        path = self.write(
            """
            # a comment
            [sipcore]
            db = host=db password=50%off
            [handler:webhook]
            URL = http://127.0.0.1/hook ; not a comment
            """
        )
        config = readConfig(path)
        self.assertEqual(config.settings, {"db": "host=db password=50%off"})
        self.assertEqual(
            config.handlerOptions, {"webhook": {"URL": "http://127.0.0.1/hook ; not a comment"}}
        )

    def test_missingFile(self) -> None:
        """
        A file that cannot be read is a usage error naming it.
        """
        path = self.mktemp()
        e = self.assertRaises(usage.UsageError, readConfig, path)
        self.assertEqual(str(e), "--config {}: cannot read it: No such file or directory".format(
            path))

    def test_syntaxError(self) -> None:
        """
        A key before any section is a usage error naming the file and line.
        """
        path = self.write("server-id = 1\n")
        e = self.assertRaises(usage.UsageError, readConfig, path)
        self.assertIn("--config {}: File contains no section headers.".format(path), str(e))
        self.assertIn("line: 1", str(e))

    def test_duplicateKey(self) -> None:
        """
        A key given twice in one section is refused, naming it.
        """
        path = self.write("[sipcore]\nserver-id = 1\nserver-id = 2\n")
        e = self.assertRaises(usage.UsageError, readConfig, path)
        self.assertIn("option 'server-id' in section 'sipcore' already exists", str(e))

    def test_unknownSection(self) -> None:
        """
        A section that is neither C{[sipcore]} nor C{[handler:NAME]} is
        refused, naming it.
        """
        path = self.write("[sipcor]\nserver-id = 1\n")
        e = self.assertRaises(usage.UsageError, readConfig, path)
        self.assertEqual(
            str(e),
            "{}: [sipcor]: unknown section; expected [sipcore] or [handler:NAME]".format(path),
        )

    def test_defaultSectionIsNotSpecial(self) -> None:
        """
        C{[DEFAULT]} is not configparser's magic section here: it is an
        unknown section, so its keys cannot leak into the others.
        """
        path = self.write("[DEFAULT]\ndb = x\n[sipcore]\n")
        e = self.assertRaises(usage.UsageError, readConfig, path)
        self.assertIn("[DEFAULT]: unknown section", str(e))

    def test_handlerSectionWithoutName(self) -> None:
        """
        C{[handler:]} is refused.
        """
        path = self.write("[handler:]\nx = 1\n")
        e = self.assertRaises(usage.UsageError, readConfig, path)
        self.assertIn("[handler:]: a handler section needs a name", str(e))


class ApplyTests(ConfigTestCase):
    """
    The file's values become command-line arguments, put before the
    command line's own.
    """

    def test_arguments(self) -> None:
        """
        Each value becomes one C{--key=value} (one per line for a
        repeatable option), a flag set to yes becomes C{--key} and one set
        to no nothing, and each handler section's key becomes a
        C{--handler-option}.
        """
        path = self.write(
            """
            [sipcore]
            server-id = 3
            db-init = yes
            list-handlers = no
            listen =
                udp:5070
                tcp:5070
            [handler:location-cleanup]
            batch-size = 7
            """
        )
        self.assertEqual(
            configArguments(readConfig(path), Options()),
            [
                "--server-id=3",
                "--db-init",
                "--listen=udp:5070",
                "--listen=tcp:5070",
                "--handler-option=location-cleanup:batch-size=7",
            ],
        )

    def test_everyKind(self) -> None:
        """
        Parameters are coerced, multi-line values of repeatable options
        become lists, flags take yes/no, and handler sections become
        handler options.
        """
        path = self.write(
            """
            [sipcore]
            server-id = 3
            idle-timeout = 30.5
            db = host=127.0.0.1 dbname=sip
            db-init = yes
            listen =
                udp:5070
                tcp:5070:interface=127.0.0.1

                ws:8088
            domain =
                Example.COM
                example.net
            handler = connection-audit
            handler-option = location-cleanup:batch-size=50

            [handler:connection-audit]
            batch-size = 200
            create-table = no
            """
        )
        options = self.parse("--config", path)
        self.assertEqual(options["config"], path)
        self.assertEqual(options["server-id"], 3)
        self.assertEqual(options["idle-timeout"], 30.5)
        self.assertEqual(options["db"], "host=127.0.0.1 dbname=sip")
        self.assertEqual(options["db-init"], 1)
        self.assertEqual(
            options["listen"], ["udp:5070", "tcp:5070:interface=127.0.0.1", "ws:8088"]
        )
        self.assertEqual(options["domain"], ["example.com", "example.net"])
        self.assertEqual(options.handlerNames(), ["location-cleanup", "connection-audit"])
        self.assertEqual(
            options["handler-option"],
            {
                "location-cleanup": {"batch-size": "50"},
                "connection-audit": {"batch-size": "200", "create-table": "no"},
            },
        )

    def test_flagOff(self) -> None:
        """
        A flag set to C{no} stays off.
        """
        options = self.parse("--config", self.write("[sipcore]\nlist-handlers = off\n"))
        self.assertEqual(options["list-handlers"], 0)

    def test_commandLineOverrides(self) -> None:
        """
        An option on the command line, before or after C{--config}, wins
        over the file; a repeatable one adds its values after the file's.
        """
        path = self.write(
            """
            [sipcore]
            server-id = 3
            max-expires = 7200
            listen =
                udp:5070
                tcp:5070
            """
        )
        options = self.parse(
            "--server-id", "9", "--config", path, "--listen", "tcp:6000"
        )
        self.assertEqual(options["server-id"], 9)
        self.assertEqual(options["max-expires"], 7200)
        self.assertEqual(options["listen"], ["udp:5070", "tcp:5070", "tcp:6000"])

    def test_handlerOptionsMergePerKey(self) -> None:
        """
        A handler option on the command line overrides the file's value
        for that handler and key only.
        """
        path = self.write(
            """
            [handler:location-cleanup]
            batch-size = 200
            batch-delay = 0.5
            """
        )
        options = self.parse(
            "--handler-option", "location-cleanup:batch-size=10", "--config", path
        )
        self.assertEqual(
            options["handler-option"],
            {"location-cleanup": {"batch-size": "10", "batch-delay": "0.5"}},
        )

    def test_fileValidatedEvenWhenOverridden(self) -> None:
        """
        Unknown keys are refused even when the command line gives the
        option too.
        """
        message = self.refused("[sipcore]\nserver_id = 1\n", "--server-id", "2")
        self.assertTrue(message.startswith(": [sipcore] server_id: unknown key; known keys: "))
        self.assertIn("server-id", message)

    def test_unknownKey(self) -> None:
        """
        An unknown key names the file, section and key, and lists the
        known keys (which exclude config, help and version).
        """
        message = self.refused("[sipcore]\nlisten-on = tcp:5060\n")
        self.assertTrue(message.startswith(": [sipcore] listen-on: unknown key; known keys: "))
        known = message.split("known keys: ")[1].split(", ")
        self.assertIn("listen", known)
        self.assertIn("handler", known)
        for name in NOT_IN_FILE:
            self.assertNotIn(name, known)

    def test_configKeyRefused(self) -> None:
        """
        A file cannot include another file.
        """
        message = self.refused("[sipcore]\nconfig = other.ini\n")
        self.assertTrue(message.startswith(": [sipcore] config: unknown key"))

    def test_badParameter(self) -> None:
        """
        A value the option's coercion refuses names the key, the value and
        the reason.
        """
        self.assertEqual(
            self.refused("[sipcore]\nserver-id = -1\n"),
            ": [sipcore] server-id: invalid value '-1': must not be negative",
        )

    def test_parameterTakesOneValue(self) -> None:
        """
        A single-valued option given as a list is refused.
        """
        self.assertEqual(
            self.refused("[sipcore]\nserver-id =\n    1\n    2\n"),
            ": [sipcore] server-id: takes one value, not 2",
        )

    def test_badListen(self) -> None:
        """
        A bad listener in the file is refused with the listener's message.
        """
        path = self.write("[sipcore]\nlisten =\n    udp:5060\n    sctp:5060\n")
        e = self.assertRaises(usage.UsageError, self.parse, "--config", path)
        self.assertTrue(str(e).startswith("--listen sctp:5060: "), str(e))

    def test_badFlag(self) -> None:
        """
        A flag takes yes or no.
        """
        self.assertEqual(
            self.refused("[sipcore]\ndb-init = maybe\n"),
            ": [sipcore] db-init: a flag takes yes or no, not 'maybe'",
        )

    def test_badHandlerOptionLine(self) -> None:
        """
        A C{handler-option} line that is not NAME:key=value is refused.
        """
        path = self.write("[sipcore]\nhandler-option = location-cleanup\n")
        e = self.assertRaises(usage.UsageError, self.parse, "--config", path)
        self.assertEqual(
            str(e), "--handler-option 'location-cleanup': expected NAME:key=value"
        )

    def test_sectionOfDisabledHandler(self) -> None:
        """
        Options for a handler that is not enabled are refused when the
        service is built, saying how to enable it.
        """
        path = self.write("[sipcore]\nlisten = tcp:0\n[handler:connection-audit]\nbatch-size = 5\n")
        e = self.assertRaises(
            HandlerConfigError, buildService, self.parse("--config", path), UDPMemoryReactor()
        )
        self.assertEqual(
            str(e),
            "options given (--handler-option or [handler:NAME]) for handler(s) not enabled: "
            "connection-audit; enable them with --handler NAME",
        )

    def test_enabledOnCommandLine(self) -> None:
        """
        A handler section is accepted when the command line enables the
        handler.
        """
        path = self.write("[handler:connection-audit]\nbatch-size = 5\n")
        options = self.parse("--config", path, "--handler", "connection-audit")
        self.assertEqual(options["handler-option"]["connection-audit"], {"batch-size": "5"})

    def test_configTwice(self) -> None:
        """
        C{--config} may be given once.
        """
        path = self.write("[sipcore]\n")
        e = self.assertRaises(usage.UsageError, self.parse, "--config", path, "--config", path)
        self.assertEqual(str(e), "--config may be given only once")

    def test_configInFull(self) -> None:
        """
        C{--config=FILE} reads the file too; an abbreviation of C{--config}
        is refused rather than ignored.
        """
        path = self.write("[sipcore]\nserver-id = 5\n")
        self.assertEqual(self.parse("--config=" + path)["server-id"], 5)
        e = self.assertRaises(usage.UsageError, self.parse, "--conf", path)
        self.assertEqual(str(e), "write --config FILE or --config=FILE in full")

    def test_laterChecksStillApply(self) -> None:
        """
        The checks across options run on the merged values.
        """
        e = self.assertRaises(
            usage.UsageError,
            self.parse,
            "--config",
            self.write("[sipcore]\nmin-expires = 600\n"),
            "--max-expires",
            "300",
        )
        self.assertIn("--min-expires must not exceed --max-expires", str(e))

    def test_handlerGetsFileOptions(self) -> None:
        """
        A handler section's options reach the handler: location-cleanup's
        queue is built with the file's batch size.
        """
        path = self.write(
            """
            [sipcore]
            listen = tcp:0
            [handler:location-cleanup]
            batch-size = 7
            """
        )
        service = buildService(self.parse("--config", path), UDPMemoryReactor())
        service.startService()
        self.assertIsNone(service.startFailure)
        [queue] = list(service.queues)
        self.assertEqual(queue.batchSize, 7)
        service.stopService()


class DocumentationTests(SynchronousTestCase):
    """
    docs/configuration.rst documents every option.
    """

    def test_everyOptionDocumented(self) -> None:
        """
        Every long option of C{twistd sipcore} appears in
        docs/configuration.rst as C{``--name``}, so the page cannot drift
        from the code.
        """
        text = (ROOT / "docs" / "configuration.rst").read_text(encoding="utf-8")
        documented = set(re.findall(r"``--([a-z0-9-]+)", text))
        names = {spec.rstrip("=") for spec in Options().longOpt} - {"help", "version"}
        self.assertEqual(sorted(names - documented), [])
