# -*- test-case-name: tests.test_bench -*-
"""
The storm's UDP pinger: a SIP client in its own process that sends an
OPTIONS to the server every C{--interval} seconds (10 ms) over UDP and
records when each one's answer arrives, as a user's phone would see it.

Protocol on stdin/stdout (one line each):
  - it prints C{READY} once its first OPTIONS was answered;
  - it reads C{STOP} (or stops by itself after C{--seconds}), waits
    C{--timeout} seconds for the answers still due, prints one JSON object
    and exits: C{{"samples": [[sent, answerSeconds or null], ...]}}, each
    C{sent} on the system's monotonic clock (C{time.monotonic()}, the same
    clock in every process), C{null} for an OPTIONS never answered.

Sends are scheduled on absolute times, so a late send does not shift the
ones after it; a send more than an interval late is sent at once and
counted from when it was meant to go (the client's view: it wanted to
ask then).

Usage: C{python bench/storm_pinger.py PORT [--interval S] [--seconds S]
[--timeout S]}.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import sys
import time

HOST = "127.0.0.1"

#: Most OPTIONS one run sends, whatever C{--seconds} says.
MAX_PINGS = 200_000


def options(port: int, localPort: int, number: int) -> bytes:
    return (
        "OPTIONS sip:{h}:{p} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP {h}:{l};branch=z9hG4bKping{pid}x{n};rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:pinger@{h}>;tag=p{pid}\r\nTo: <sip:{h}>\r\n"
        "Call-ID: ping{pid}x{n}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).format(h=HOST, p=port, l=localPort, pid=os.getpid(), n=number + 1).encode()


def callNumber(answer: bytes) -> int | None:
    """
    The number of the OPTIONS an answer is for (from its Call-ID).
    """
    marker = "ping{}x".format(os.getpid()).encode()
    start = answer.find(marker)
    if start < 0:
        return None
    start += len(marker)
    end = start
    while end < len(answer) and answer[end:end + 1].isdigit():
        end += 1
    return int(answer[start:end]) if end > start else None


def run(args: argparse.Namespace) -> dict[str, list[list[float | None]]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    localPort = sock.getsockname()[1]
    sent: list[float] = []
    answered: dict[int, float] = {}
    ready = False
    started = time.monotonic()
    stopAt = started + args.seconds
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ, "sock")
        sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
        nextSend = started
        while True:
            now = time.monotonic()
            if now >= stopAt or len(sent) >= MAX_PINGS:
                break
            if now >= nextSend:
                number = len(sent)
                sent.append(nextSend)
                try:
                    sock.sendto(options(args.port, localPort, number), (HOST, args.port))
                except OSError:
                    pass
                nextSend += args.interval
                if nextSend < now - args.interval:
                    nextSend = now
                continue
            stop = False
            for key, _ in sel.select(timeout=max(0.0, nextSend - now)):
                if key.data == "stdin":
                    line = sys.stdin.readline()
                    if not line or line.strip() == "STOP":
                        stop = True
                    continue
                while True:
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        break
                    except OSError:
                        break
                    number = callNumber(data)
                    if number is not None and 0 < number <= len(sent):
                        answered.setdefault(number - 1, time.monotonic())
                        if not ready:
                            ready = True
                            print("READY", flush=True)
            if stop:
                break
        sel.unregister(sys.stdin)
        deadline = time.monotonic() + args.timeout
        while len(answered) < len(sent) and time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            while True:
                try:
                    data = sock.recv(65536)
                except OSError:
                    break
                number = callNumber(data)
                if number is not None and 0 < number <= len(sent):
                    answered.setdefault(number - 1, time.monotonic())
    sock.close()
    samples: list[list[float | None]] = []
    for i, at in enumerate(sent):
        got = answered.get(i)
        samples.append([round(at, 6), None if got is None else round(got - at, 6)])
    return {"samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps(run(args)), flush=True)


if __name__ == "__main__":
    main()
