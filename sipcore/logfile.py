# -*- test-case-name: tests.test_logfile -*-
"""
Reopening the log file that twistd writes (C{twistd --logfile FILE}), so
that an outside tool can rotate it (logrotate's C{postrotate} sending
C{SIGHUP}): after a reopen the next lines go to a new file at the same
path.

Twisted has no public way to reach the file twistd opens for C{--logfile}
(twisted/twisted#3363): twistd's L{twisted.scripts._twistd_unix.UnixAppLogger}
opens a L{twisted.python.logfile.LogFile}, wraps it in a
L{twisted.logger.textFileLogObserver} and adds that observer to the
L{twisted.logger.globalLogPublisher}; only L{LogFile.reopen} is public.
This module alone reads the two private names on the way
(C{LogPublisher._observers} and C{FileLogObserver._outFile});
C{tests.test_logfile} fails when Twisted changes either.
"""

from __future__ import annotations

import errno
import os

from twisted.logger import FileLogObserver, LogPublisher, globalLogPublisher
from twisted.python.logfile import BaseLogFile

__all__ = ["logFiles", "reopenLogFiles"]


def logFiles(publisher: LogPublisher = globalLogPublisher) -> list[BaseLogFile]:
    """
    The log files that the file observers of C{publisher} write to (with
    C{twistd --logfile FILE}: that file; logging to standard output: none).
    """
    files: list[BaseLogFile] = []
    for observer in publisher._observers:
        if isinstance(observer, FileLogObserver):
            out = observer._outFile
            if isinstance(out, BaseLogFile):
                files.append(out)
    return files


def reopenLogFiles(publisher: LogPublisher = globalLogPublisher) -> str | None:
    """
    Close and open again every log file of L{logFiles}.  A file this
    process could not open again is left open as it is (its lines keep
    going to the renamed file).

    @return: their paths, or C{None} when there is none.
    @raise OSError: a file could not be opened again (the others were
        reopened).
    """
    files = logFiles(publisher)
    refused = []
    for logFile in files:
        if _writable(logFile):
            logFile.reopen()
        else:
            refused.append(logFile.path)
    if refused:
        raise OSError(errno.EACCES, "cannot open {} for writing; still writing the old "
                      "file".format(", ".join(refused)))
    return ", ".join(logFile.path for logFile in files) or None


def _writable(logFile: BaseLogFile) -> bool:
    """
    Whether this process may open C{logFile}'s path for writing: the file,
    or the directory it would be created in.
    """
    if os.path.exists(logFile.path):
        return os.access(logFile.path, os.W_OK)
    return os.access(logFile.directory, os.W_OK)
