"""
Tests for L{sipcore.logfile}: the log file twistd opens for C{--logfile} is
found through the observer twistd makes for it, and reopened at its path.

These tests build the observer with twistd's own code
(C{UnixAppLogger._getLogObserver}) and read it with the two private names
L{sipcore.logfile} relies on: they fail when Twisted changes how twistd
holds its log file.
"""

from __future__ import annotations

import io
import os
import signal

from twisted.logger import ILogObserver, LogPublisher, textFileLogObserver
from twisted.python.filepath import FilePath
from twisted.python.logfile import LogFile
from twisted.scripts._twistd_unix import UnixAppLogger
from twisted.trial.unittest import SynchronousTestCase

from sipcore import logfile
from sipcore.logfile import logFiles, reopenLogFiles


def _event(text: str) -> dict[str, object]:
    return {"log_format": text, "log_time": 0.0, "log_namespace": "test",
            "log_system": "-", "log_level": None}


class ReopenTests(SynchronousTestCase):
    """
    L{logFiles} and L{reopenLogFiles} on the observer of C{twistd
    --logfile FILE}.
    """

    def twistdObserver(self, path: str) -> ILogObserver:
        """
        The observer twistd makes for C{twistd -n --logfile path} (it also
        sets a C{SIGUSR1} handler, put back at cleanup).
        """
        previous = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        observer: ILogObserver = UnixAppLogger(
            {"logfile": path, "nodaemon": True})._getLogObserver()
        return observer

    def test_twistdLogFileFound(self) -> None:
        """
        The file of twistd's C{--logfile} observer is found, and nothing
        else: an observer writing to a plain stream is not a log file.
        """
        path = self.mktemp()
        observer = self.twistdObserver(path)
        publisher = LogPublisher(observer, textFileLogObserver(io.StringIO()))
        [found] = logFiles(publisher)
        self.addCleanup(found.close)
        self.assertIsInstance(found, LogFile)
        self.assertEqual(found.path, os.path.abspath(path))
        self.assertEqual(logFiles(LogPublisher()), [])
        self.assertIsNone(reopenLogFiles(LogPublisher()))

    def test_renamedThenReopened(self) -> None:
        """
        After the file is renamed (as logrotate does), the lines go on to the
        renamed file until L{reopenLogFiles}; then they go to a new file at
        the path, and the renamed one gets no more.
        """
        path = FilePath(self.mktemp())
        observer = self.twistdObserver(path.path)
        publisher = LogPublisher(observer)
        self.addCleanup(logFiles(publisher)[0].close)
        publisher(_event("first line"))
        rotated = path.sibling(path.basename() + ".1")
        path.moveTo(rotated)
        publisher(_event("second line"))
        self.assertEqual(reopenLogFiles(publisher), path.path)
        publisher(_event("third line"))
        old = rotated.getContent()
        self.assertIn(b"first line", old)
        self.assertIn(b"second line", old)
        self.assertNotIn(b"third line", old)
        self.assertIn(b"third line", path.getContent())
        self.assertNotIn(b"second line", path.getContent())

    def test_notWritableKept(self) -> None:
        """
        A path this process may not open for writing is not reopened: the
        lines keep going to the open file, and the C{OSError} says why.
        """
        path = FilePath(self.mktemp())
        observer = self.twistdObserver(path.path)
        publisher = LogPublisher(observer)
        self.addCleanup(logFiles(publisher)[0].close)
        rotated = path.sibling(path.basename() + ".1")
        path.moveTo(rotated)
        self.patch(logfile.os, "access", lambda name, mode: False)
        error = self.assertRaises(OSError, reopenLogFiles, publisher)
        self.assertIn("cannot open {} for writing".format(path.path), str(error))
        publisher(_event("still here"))
        self.assertIn(b"still here", rotated.getContent())
        self.assertFalse(path.exists())
