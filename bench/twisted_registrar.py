# -*- test-case-name: tests.test_bench -*-
"""
The Twisted reference registrar for the benchmark: Twisted's own
C{twisted.protocols.sip.RegisterProxy} with an C{InMemoryRegistry}, on
UDP, with a 4 MiB receive buffer.  It parses little and keeps no
transactions: the baseline of what a Twisted process can answer.

Usage: C{python bench/twisted_registrar.py PORT [DOMAIN]}.  Stops on
SIGTERM.
"""

from __future__ import annotations

import socket
import sys

#: The receive buffer asked for (SO_RCVBUFFORCE when root, else SO_RCVBUF).
RECEIVE_BUFFER = 4 * 1024 * 1024

#: Linux's SO_RCVBUFFORCE (not in every Python's socket module).
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def main(argv: list[str]) -> None:
    from twisted.internet import reactor
    from twisted.protocols import sip

    port = int(argv[1])
    domain = argv[2] if len(argv) > 2 else "127.0.0.1"
    proxy = sip.RegisterProxy(host="127.0.0.1", port=port)
    proxy.registry = proxy.locator = sip.InMemoryRegistry(domain)
    listening = reactor.listenUDP(port, proxy, interface="127.0.0.1")  # type: ignore[attr-defined]
    handle = listening.getHandle()
    try:
        handle.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    except OSError:
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    print("listening on 127.0.0.1:{} rcvbuf={}".format(
        port, handle.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)), flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv)
