# -*- test-case-name: tests.test_packaging -*-
"""
sipcore's bounded epoll reactor, for C{twistd --reactor sipcore-epoll}.
"""

from twisted.application.reactors import Reactor

sipcoreEpoll = Reactor(
    "sipcore-epoll",
    "sipcore.reactor",
    "epoll reactor that handles at most 64 I/O events per turn",
)
