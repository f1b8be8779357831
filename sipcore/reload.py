# -*- test-case-name: tests.test_reload -*-
"""
Reloading what can change while the server runs, on C{SIGHUP}.

L{ReloadService} holds the server's reloadable parts (the credential file
of C{--auth-file}, the certificates and keys of the TLS and WSS listeners,
the routes, the log file of C{twistd --logfile}) and reloads them all in L{ReloadService.reload}, logging one line that says
what was reloaded and what failed.  A part that fails to reload keeps what
it had.  While running it answers C{SIGHUP} with a reload (the handler only
schedules it in the reactor thread, with C{callFromThread}) and puts back
the previous handler when it stops; C{SIGTERM} and C{SIGINT} stay
twistd's: the ordered shutdown.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

__all__ = ["Reloadable", "ReloadService"]

#: One reloadable part: its name in the log line, and what reloads it
#: (returns a short description of what it read, or C{None} when it had
#: nothing to reload this time; raises C{ValueError} or C{OSError} when it
#: cannot, keeping what it had).
Reloadable = tuple[str, Callable[[], str | None]]


class ReloadService(Service):
    """
    Reloads the server's reloadable parts on L{reload}, and on C{SIGHUP}
    while running when made with C{installSignal}.

    @ivar reloads: how many reloads ran.
    """

    name = "reload"
    reloads = 0

    _log = Logger()

    def __init__(self, reactor: IReactorFromThreads, parts: Sequence[Reloadable],
                 installSignal: bool = False) -> None:
        """
        @param reactor: where the C{SIGHUP} handler schedules the reload.
        @param parts: the reloadable parts, reloaded in this order.
        @param installSignal: answer C{SIGHUP} while running (the twistd
            entry point does; tests building servers in one process do not).
        """
        self._reactor = reactor
        self.parts = list(parts)
        self.installSignal = installSignal
        self._previous: Any = None

    def startService(self) -> None:
        Service.startService(self)
        if self.installSignal:
            self._previous = signal.signal(signal.SIGHUP, self._hangUp)

    def stopService(self) -> None:
        Service.stopService(self)
        if self.installSignal:
            previous = self._previous if self._previous is not None else signal.SIG_DFL
            signal.signal(signal.SIGHUP, previous)
            self._previous = None

    def _hangUp(self, number: int, frame: FrameType | None) -> None:
        self._reactor.callFromThread(self.reload, "SIGHUP")

    def reload(self, cause: str = "reload") -> dict[str, str]:
        """
        Reload every part; log one line naming what was reloaded and what
        failed (a warning when something failed).

        @param cause: what asked for it, for the log line.
        @return: what each part said, by name (C{"failed: ..."} for a part
            that kept what it had; a part that had nothing to reload is
            left out).
        """
        self.reloads += 1
        results: dict[str, str] = {}
        failed = False
        for name, reloader in self.parts:
            try:
                result = reloader()
            except (ValueError, OSError) as e:
                failed = True
                results[name] = "failed: {}".format(e)
            except Exception as e:
                failed = True
                results[name] = "failed: {}".format(type(e).__name__)
                self._log.failure("reloading {name} failed", name=name)
            else:
                if result is not None:
                    results[name] = result
        summary = "; ".join("{} {}".format(name, what) for name, what in results.items())
        if failed:
            self._log.warn("{cause}: reloaded {summary}", cause=cause, summary=summary)
        else:
            self._log.info("{cause}: reloaded {summary}", cause=cause,
                           summary=summary or "nothing (nothing to reload)")
        return results
