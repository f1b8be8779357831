# -*- test-case-name: tests.test_packaging -*-
"""
sipcore's fair epoll reactor, for C{twistd --reactor sipcore-epoll} (the
default of C{twistd sipcore} on Linux).
"""

from twisted.application.reactors import Reactor

sipcoreEpoll = Reactor(
    "sipcore-epoll",
    "sipcore.reactor",
    "epoll reactor serving listeners, UDP and database connections before each 64 stream events",
)
