# -*- test-case-name: tests.test_bench -*-
"""
The disconnect-storm client: opens many stream connections (TCP, or
WebSocket with the C{sip} subprotocol) to a registrar on loopback,
REGISTERs once over each, holds them idle, and on command drops them all at
once.

Protocol on stdin/stdout (one line each):
  - it prints C{READY <registered> <failed> <seconds>} once every
    connection has its answer (or failed);
  - it reads C{REFRESH}, sends a REGISTER refresh (the same Call-ID and
    Contact, the next CSeq) over every connection in one loop, and prints
    C{REFRESHED <answered 200> <failed> <seconds until the last answer>};
  - it reads C{DROP}, closes every connection in one loop (C{--reset}:
    with a TCP reset, C{SO_LINGER} 0; otherwise a FIN), prints
    C{DROPPED <seconds the loop took>} and exits.
It exits by itself after C{--hold} seconds without a command.

Usage: C{python bench/storm_client.py tcp|ws PORT COUNT [--concurrency N]
[--hold SECONDS] [--reset]}.  Raises its own C{RLIMIT_NOFILE} to the hard
limit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import socket
import struct
import sys
import time

HOST = "127.0.0.1"


def register(user: str, transport: str, local: tuple[str, int], port: int,
             cseq: int = 1) -> bytes:
    via = "SIP/2.0/{} {}:{};branch=z9hG4bK{};rport".format(
        "WS" if transport == "ws" else "TCP", local[0], local[1], user)
    contact = ("<sip:{}@{}:{};transport={}>".format(user, local[0], local[1], transport))
    lines = [
        "REGISTER sip:{} SIP/2.0".format(HOST),
        "Via: " + via,
        "Max-Forwards: 70",
        "From: <sip:{}@{}>;tag=t{}".format(user, HOST, user),
        "To: <sip:{}@{}>".format(user, HOST),
        "Call-ID: {}-{}".format(user, os.getpid()),
        "CSeq: {} REGISTER".format(cseq),
        "Contact: " + contact,
        "Expires: 3600",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def wsFrame(payload: bytes) -> bytes:
    """
    One masked text frame (clients must mask, RFC 6455 5.3).
    """
    mask = os.urandom(4)
    header = bytearray([0x81])
    n = len(payload)
    if n < 126:
        header.append(0x80 | n)
    else:
        header.append(0x80 | 126)
        header += n.to_bytes(2, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(header) + mask + masked


class Connection:
    """
    One registered connection: its streams, user and local address.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 transport: str, user: str, local: tuple[str, int]) -> None:
        self.reader = reader
        self.writer = writer
        self.transport = transport
        self.user = user
        self.local = local

    def send(self, message: bytes) -> None:
        self.writer.write(wsFrame(message) if self.transport == "ws" else message)

    async def answer(self, timeout: float) -> bytes:
        """
        The next SIP message from the server (a WebSocket frame's payload,
        or the head of a TCP message).
        """
        if self.transport == "ws":
            first = await asyncio.wait_for(self.reader.readexactly(2), timeout)
            length = first[1] & 0x7F
            if length == 126:
                length = int.from_bytes(await self.reader.readexactly(2), "big")
            elif length == 127:
                length = int.from_bytes(await self.reader.readexactly(8), "big")
            return await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)


async def openOne(index: int, transport: str, port: int, timeout: float) -> Connection:
    """
    Connect, (WebSocket: handshake), REGISTER, wait for the final answer.

    @raise Exception: when anything fails or takes longer than C{timeout}.
    """
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    try:
        local = writer.get_extra_info("sockname")[:2]
        user = "s{}x{}".format(os.getpid(), index)
        if transport == "ws":
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write((
                "GET / HTTP/1.1\r\nHost: {}:{}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: {}\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
            ).format(HOST, port, key).encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            if not head.startswith(b"HTTP/1.1 101"):
                raise RuntimeError("handshake refused: " + head.split(b"\r\n")[0].decode())
        connection = Connection(reader, writer, transport, user, local)
        connection.send(register(user, transport, local, port))
        answer = await connection.answer(timeout)
        if not answer.startswith(b"SIP/2.0 200"):
            raise RuntimeError("answer: " + answer.split(b"\r\n")[0].decode())
        return connection
    except BaseException:
        writer.transport.abort()
        raise


async def refreshAll(connections: list[Connection], port: int, timeout: float) -> str:
    """
    Send a REGISTER refresh over every connection in one loop, then wait
    for every answer.

    @return: the C{REFRESHED} line.
    """
    t0 = time.monotonic()
    for connection in connections:
        connection.send(register(connection.user, connection.transport, connection.local,
                                 port, cseq=2))
    last = t0

    async def one(connection: Connection) -> bool:
        nonlocal last
        try:
            answer = await connection.answer(timeout)
        except Exception:
            return False
        last = max(last, time.monotonic())
        return answer.startswith(b"SIP/2.0 200")

    outcomes = await asyncio.gather(*(one(c) for c in connections))
    ok = sum(outcomes)
    return "REFRESHED {} {} {:.3f}".format(ok, len(outcomes) - ok, last - t0)


async def run(args: argparse.Namespace) -> None:
    started = time.monotonic()
    semaphore = asyncio.Semaphore(args.concurrency)
    writers: list[Connection] = []
    failed = 0
    errors: dict[str, int] = {}

    async def one(i: int) -> None:
        nonlocal failed
        async with semaphore:
            try:
                writers.append(await openOne(i, args.transport, args.port, args.timeout))
            except Exception as e:
                failed += 1
                text = (str(e) or type(e).__name__)[:80]
                errors[text] = errors.get(text, 0) + 1

    await asyncio.gather(*(one(i) for i in range(args.count)))
    for text, count in sorted(errors.items(), key=lambda kv: -kv[1])[:3]:
        print("ERROR {} x {}".format(count, text), file=sys.stderr, flush=True)
    print("READY {} {} {:.3f}".format(len(writers), failed, time.monotonic() - started),
          flush=True)
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    deadline = time.monotonic() + args.hold
    while True:
        try:
            line = (await asyncio.wait_for(commands.readline(),
                                           max(0.0, deadline - time.monotonic()))).decode()
        except asyncio.TimeoutError:
            line = "DROP"
        if line.strip() == "REFRESH":
            print(await refreshAll(writers, args.port, args.timeout), flush=True)
            continue
        if line.strip() != "DROP":
            return
        break
    t0 = time.monotonic()
    for connection in writers:
        if args.reset:
            sock = connection.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.writer.transport.abort()
        else:
            connection.writer.transport.close()
    took = time.monotonic() - t0
    await asyncio.sleep(0.2)
    print("DROPPED {:.3f}".format(took), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("transport", choices=("tcp", "ws"))
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--hold", type=float, default=600.0)
    parser.add_argument("--reset", action="store_true",
                        help="drop with a TCP reset (SO_LINGER 0) instead of a FIN")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
