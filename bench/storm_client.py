# -*- test-case-name: tests.test_bench -*-
"""
The disconnect-storm client: opens many stream connections (TCP, or
WebSocket with the C{sip} subprotocol) to a registrar on loopback,
REGISTERs once over each, holds them idle, and on command drops them all at
once.

Protocol on stdin/stdout (one line each):
  - it prints C{READY <registered> <failed> <seconds>} once every
    connection has its answer (or failed);
  - it reads C{DROP}, closes every connection (FIN, in one loop), prints
    C{DROPPED <seconds the loop took>} and exits.
It exits by itself after C{--hold} seconds without a command.

Usage: C{python bench/storm_client.py tcp|ws PORT COUNT [--concurrency N]
[--hold SECONDS]}.  Raises its own C{RLIMIT_NOFILE} to the hard limit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import sys
import time

HOST = "127.0.0.1"


def register(user: str, transport: str, local: tuple[str, int], port: int) -> bytes:
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
        "CSeq: 1 REGISTER",
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


async def openOne(index: int, transport: str, port: int, timeout: float) -> asyncio.StreamWriter:
    """
    Connect, (WebSocket: handshake), REGISTER, wait for the final answer.

    @raise Exception: when anything fails or takes longer than C{timeout}.
    """
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    try:
        local = writer.get_extra_info("sockname")[:2]
        user = "s{}x{}".format(os.getpid(), index)
        message = register(user, transport, local, port)
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
            writer.write(wsFrame(message))
            first = await asyncio.wait_for(reader.readexactly(2), timeout)
            length = first[1] & 0x7F
            if length == 126:
                length = int.from_bytes(await reader.readexactly(2), "big")
            elif length == 127:
                length = int.from_bytes(await reader.readexactly(8), "big")
            answer = await asyncio.wait_for(reader.readexactly(length), timeout)
        else:
            writer.write(message)
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        if not answer.startswith(b"SIP/2.0 200"):
            raise RuntimeError("answer: " + answer.split(b"\r\n")[0].decode())
        return writer
    except BaseException:
        writer.transport.abort()
        raise


async def run(args: argparse.Namespace) -> None:
    started = time.monotonic()
    semaphore = asyncio.Semaphore(args.concurrency)
    writers: list[asyncio.StreamWriter] = []
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
    try:
        line = (await asyncio.wait_for(commands.readline(), args.hold)).decode()
    except asyncio.TimeoutError:
        line = "DROP"
    if line.strip() != "DROP":
        return
    t0 = time.monotonic()
    for writer in writers:
        writer.transport.close()
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
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
