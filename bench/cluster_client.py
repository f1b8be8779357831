# -*- test-case-name: tests.test_bench -*-
"""
The cluster benchmark's clients: registered users that answer MESSAGE, and
a sender of MESSAGE at a fixed rate that times the answers.

C{answer} opens C{--users} TCP connections, user I{i} to the I{i}-th
C{--server} in turn (so the users are spread evenly over the servers
named), REGISTERs each user over its connection (Contact: the
connection's own address), prints C{READY <registered> <failed>} and then
answers every MESSAGE it gets with C{200 OK}, adding a header
C{X-Bench-Vias} with the number of C{Via} entries the request arrived
with: 2 when one server relayed it (the sender's and that server's),
3 when it crossed from one cluster member to another.  It stops on
C{STOP} or the end of its standard input, or after C{--hold} seconds,
and prints one JSON line of what it answered.

C{send} opens C{--connections} TCP connections (1) to each C{--server},
sends C{--rate} MESSAGEs per second for C{--seconds} seconds, MESSAGE
I{k} over connection I{k} mod the number of connections, each to a user drawn at
random (seeded), and prints one JSON line: sent, answered 200, failed
(another final status or no answer within C{--timeout} seconds), the
achieved rate, and the median and 99th percentile answer times of the
requests that crossed members (C{X-Bench-Vias: 3}) and of those that did
not.

Usage::

    python bench/cluster_client.py answer --users N --server HOST:PORT ... [--hold S]
    python bench/cluster_client.py send --users N --server HOST:PORT ... --rate R --seconds S

Only 127.0.0.x addresses; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence

DOMAIN = "127.0.0.1"


def parseServer(text: str) -> tuple[str, int]:
    """
    C{HOST:PORT} on loopback, as a pair; anything else is refused.
    """
    host, _, port = text.rpartition(":")
    if not host.startswith("127."):
        raise argparse.ArgumentTypeError("only 127.0.0.x addresses: " + text)
    return host, int(port)


def header(head: bytes, name: bytes) -> bytes | None:
    """
    The first value of header C{name} (lower case, with the colon) in a
    message's head, or C{None}.
    """
    for line in head.split(b"\r\n")[1:]:
        if line[:len(name)].lower() == name:
            return line[len(name):].strip()
    return None


class Framer(asyncio.Protocol):
    """
    Splits a SIP byte stream into messages (head and body by
    C{Content-Length}) and hands each head to C{onMessage}.
    """

    def __init__(self, onMessage: Callable[[Framer, bytes], None]) -> None:
        self.onMessage = onMessage
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            self.buffer = self.buffer.lstrip(b"\r\n")
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = header(head, b"content-length:") or header(head, b"l:") or b"0"
            total = end + 4 + int(length)
            if len(self.buffer) < total:
                return
            self.buffer = self.buffer[total:]
            self.onMessage(self, head)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


def register(user: str, local: tuple[str, int]) -> bytes:
    """
    A REGISTER of C{user} whose Contact is the connection's local address.
    """
    return (
        "REGISTER sip:{domain} SIP/2.0\r\n"
        "Via: SIP/2.0/TCP {host}:{port};branch=z9hG4bKr{user}{pid};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:{user}@{domain}>;tag=r{user}\r\n"
        "To: <sip:{user}@{domain}>\r\n"
        "Call-ID: r{user}-{pid}\r\n"
        "CSeq: 1 REGISTER\r\n"
        "Contact: <sip:{user}@{host}:{port};transport=tcp>\r\n"
        "Expires: 3600\r\n"
        "Content-Length: 0\r\n\r\n"
    ).format(domain=DOMAIN, host=local[0], port=local[1], user=user,
             pid=os.getpid()).encode()


def okFor(head: bytes) -> bytes:
    """
    The C{200 OK} for a request's head: its Via entries, From, To (with a
    tag), Call-ID and CSeq, and C{X-Bench-Vias}.
    """
    lines = head.split(b"\r\n")[1:]
    vias: list[bytes] = []
    copied: list[bytes] = []
    for line in lines:
        name = line.split(b":", 1)[0].strip().lower()
        if name in (b"via", b"v"):
            vias.append(line)
        elif name in (b"from", b"f", b"call-id", b"i", b"cseq"):
            copied.append(line)
        elif name in (b"to", b"t"):
            copied.append(line + b";tag=a" if b"tag=" not in line else line)
    count = sum(len(line.split(b":", 1)[1].split(b",")) for line in vias)
    return (b"SIP/2.0 200 OK\r\n" + b"\r\n".join(vias + copied)
            + b"\r\nX-Bench-Vias: " + str(count).encode()
            + b"\r\nContent-Length: 0\r\n\r\n")


async def answer(servers: Sequence[tuple[str, int]], users: int, hold: float) -> int:
    loop = asyncio.get_running_loop()
    answered: dict[str, int] = {}
    registered: dict[str, asyncio.Future[int]] = {}

    def onMessage(conn: Framer, head: bytes) -> None:
        first = head.split(b"\r\n", 1)[0]
        if first.startswith(b"SIP/2.0 "):
            callId = (header(head, b"call-id:") or b"").decode()
            future = registered.get(callId)
            if future is not None and not future.done():
                future.set_result(int(first.split()[1]))
            return
        if first.startswith(b"MESSAGE "):
            reply = okFor(head)
            key = reply.rsplit(b"X-Bench-Vias: ", 1)[1].split(b"\r\n", 1)[0].decode()
            answered[key] = answered.get(key, 0) + 1
            conn.send(reply)

    conns: list[Framer] = []
    ok = failed = 0
    for i in range(users):
        host, port = servers[i % len(servers)]
        user = "u{}".format(i)
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(
                lambda: Framer(onMessage), host, port, local_addr=(host, 0)), 10)
        except (OSError, asyncio.TimeoutError):
            failed += 1
            continue
        conns.append(conn)
        assert conn.transport is not None
        local = conn.transport.get_extra_info("sockname")
        future: asyncio.Future[int] = loop.create_future()
        registered["r{}-{}".format(user, os.getpid())] = future
        conn.send(register(user, local))
        try:
            status = await asyncio.wait_for(future, 10)
        except asyncio.TimeoutError:
            status = 0
        if status == 200:
            ok += 1
        else:
            failed += 1
    print("READY {} {}".format(ok, failed), flush=True)

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    deadline = time.monotonic() + hold
    while time.monotonic() < deadline:
        try:
            line = await asyncio.wait_for(reader.readline(), max(0.1, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            break
        if not line or line.strip() == b"STOP":
            break
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    print(json.dumps({"registered": ok, "failed": failed, "answeredByVias": answered}),
          flush=True)
    return 0


def percentile(values: list[float], fraction: float) -> float | None:
    """
    The C{fraction} percentile (nearest rank) of C{values}, or C{None}.
    """
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def message(user: str, number: int, local: tuple[str, int]) -> bytes:
    """
    MESSAGE C{number} to C{user}, sent from C{local}.
    """
    return (
        "MESSAGE sip:{user}@{domain} SIP/2.0\r\n"
        "Via: SIP/2.0/TCP {host}:{port};branch=z9hG4bKm{n}x{pid};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:sender@{domain}>;tag=s{n}\r\n"
        "To: <sip:{user}@{domain}>\r\n"
        "Call-ID: m{n}-{pid}\r\n"
        "CSeq: 1 MESSAGE\r\n"
        "Content-Type: text/plain\r\n"
        "Content-Length: 5\r\n\r\n"
        "hello"
    ).format(domain=DOMAIN, host=local[0], port=local[1], user=user, n=number,
             pid=os.getpid()).encode()


async def send(servers: Sequence[tuple[str, int]], users: int, rate: float, seconds: float,
               timeout: float, seed: int, connections: int) -> int:
    loop = asyncio.get_running_loop()
    sentAt: dict[bytes, float] = {}
    latency: dict[str, list[float]] = {"same": [], "crossed": []}
    statuses: dict[str, int] = {}

    def onMessage(conn: Framer, head: bytes) -> None:
        first = head.split(b"\r\n", 1)[0]
        if not first.startswith(b"SIP/2.0 "):
            return
        code = int(first.split()[1])
        if code < 200:
            return
        callId = header(head, b"call-id:") or header(head, b"i:") or b""
        started = sentAt.pop(callId, None)
        if started is None:
            return
        statuses[str(code)] = statuses.get(str(code), 0) + 1
        if code == 200:
            vias = header(head, b"x-bench-vias:")
            kind = "crossed" if vias is not None and int(vias) >= 3 else "same"
            latency[kind].append(time.monotonic() - started)

    conns: list[Framer] = []
    for _ in range(connections):
        for host, port in servers:
            _, conn = await asyncio.wait_for(loop.create_connection(
                lambda: Framer(onMessage), host, port, local_addr=(host, 0)), 10)
            conns.append(conn)
    locals_ = [conn.transport.get_extra_info("sockname") for conn in conns
               if conn.transport is not None]
    pick = random.Random(seed)
    total = max(1, int(rate * seconds))
    pid = os.getpid()
    t0 = time.monotonic()
    for k in range(total):
        due = t0 + k / rate
        delay = due - time.monotonic()
        if delay > 0.002:
            await asyncio.sleep(delay)
        which = k % len(conns)
        sentAt["m{}-{}".format(k, pid).encode()] = time.monotonic()
        conns[which].send(message("u{}".format(pick.randrange(users)), k, locals_[which]))
    sendTime = time.monotonic() - t0
    deadline = time.monotonic() + timeout
    while sentAt and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - t0
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    ok = statuses.get("200", 0)
    result = {
        "rate": rate, "sent": total, "ok": ok, "failed": total - ok,
        "statuses": statuses, "sendSeconds": round(sendTime, 3),
        "achieved": round(total / sendTime, 1) if sendTime > 0 else 0.0,
        "seconds": round(elapsed, 3),
        "crossedShare": round(len(latency["crossed"]) / ok, 4) if ok else None,
    }
    for kind, values in latency.items():
        result[kind] = {
            "count": len(values),
            "medianMs": round(statistics.median(values) * 1000, 2) if values else None,
            "p99Ms": round((percentile(values, 0.99) or 0) * 1000, 2) if values else None,
        }
    print(json.dumps(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=("answer", "send"))
    parser.add_argument("--server", action="append", type=parseServer, required=True)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--hold", type=float, default=900.0)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connections", type=int, default=1,
                        help="sender connections to each server")
    args = parser.parse_args(argv)
    if args.role == "answer":
        return asyncio.run(answer(args.server, args.users, args.hold))
    return asyncio.run(send(args.server, args.users, args.rate, min(args.seconds, 120.0),
                            args.timeout, args.seed, max(1, min(args.connections, 64))))


if __name__ == "__main__":
    sys.exit(main())
