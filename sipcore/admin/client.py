# -*- test-case-name: tests.test_admin -*-
"""
The admin commands of the C{sipcore} command line: one HTTP request to the
admin API of a running server (a separate process, so a blocking client is
fine here), then a table or the JSON answer.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, TextIO

from sipcore.admin import TOKEN_ENVIRONMENT

__all__ = ["DEFAULT_URL", "URL_ENVIRONMENT", "run", "table"]

#: Where the admin API is asked when neither C{--admin} nor
#: C{SIPCORE_ADMIN_URL} says: the server's default endpoint,
#: L{sipcore.admin.DEFAULT_LISTEN}.
DEFAULT_URL = "http://127.0.0.1:8060"

#: The environment variable naming the admin API's URL.
URL_ENVIRONMENT = "SIPCORE_ADMIN_URL"


class _Failed(Exception):
    """
    The request failed; the message is the one line to print.
    """


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """
    Rows as a table of columns as wide as their widest cell.
    """
    cells = [[str(h) for h in headers]] + [
        ["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines) + "\n"


def _request(options: argparse.Namespace, method: str, path: str,
             query: dict[str, Any] | None = None) -> Any:
    base = options.admin or os.environ.get(URL_ENVIRONMENT) or DEFAULT_URL
    url = base.rstrip("/") + path
    wanted = {k: v for k, v in (query or {}).items() if v is not None}
    if wanted:
        url += "?" + urllib.parse.urlencode(wanted)
    token = os.environ.get(TOKEN_ENVIRONMENT, "").strip()
    if options.token_file:
        try:
            with open(options.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise _Failed("cannot read --token-file: {}".format(e.strerror)) from None
    request = urllib.request.Request(url, method=method)
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=options.timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read().decode("utf-8"))["error"]
        except (ValueError, KeyError, TypeError):
            message = e.reason
        raise _Failed("{} {}: {}".format(e.code, path, message)) from None
    except urllib.error.URLError as e:
        raise _Failed("cannot reach the admin API at {}: {}".format(base, e.reason)) from None
    except OSError as e:
        raise _Failed("cannot reach the admin API at {}: {}".format(base, e)) from None
    except ValueError:
        raise _Failed("the admin API at {} did not answer JSON".format(base)) from None


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _bindingRows(bindings: list[dict[str, Any]]) -> str:
    return table(
        ["AOR", "CONTACT", "EXPIRES", "CONID", "RECEIVED", "USER-AGENT", "RUID"],
        [[b["aor"], b["contact"], _when(b["expires"]), b["connectionId"] or None,
          b["received"], b["userAgent"], b["ruid"]] for b in bindings])


def _command(options: argparse.Namespace) -> tuple[Any, str]:
    """
    Run the command.

    @return: the JSON answer and its table.
    """
    command = options.command
    if command == "ul":
        sub = options.ulCommand
        if sub == "dump":
            answer = _request(options, "GET", "/api/registrations", {
                "domain": options.domain, "user": options.user, "conid": options.conid,
                "offset": options.offset, "limit": options.limit})
            return answer, _bindingRows(answer["registrations"])
        aor = urllib.parse.quote(options.aor, safe="@")
        if sub == "show":
            answer = _request(options, "GET", "/api/registrations/" + aor)
            return answer, _bindingRows(answer["bindings"])
        path = "/api/registrations/" + aor
        if options.ruid:
            path += "/" + urllib.parse.quote(options.ruid, safe="")
        answer = _request(options, "DELETE", path)
        return answer, "removed {} bindings of {}\n".format(answer["removed"], options.aor)
    if command == "conn":
        if options.connCommand == "list":
            answer = _request(options, "GET", "/api/connections",
                              {"transport": options.transport, "limit": 1000})
            return answer, table(
                ["CONID", "TRANSPORT", "REMOTE", "LOCAL", "AGE", "AORS"],
                [[c["conid"], c["transport"], "{}:{}".format(*c["remote"]),
                  "{}:{}".format(*c["local"]),
                  "{:.0f}s".format(c["age"]) if c["age"] is not None else None,
                  ",".join(c["aors"]) if c["aors"] else None]
                 for c in answer["connections"]])
        answer = _request(options, "DELETE", "/api/connections/{}".format(options.conid))
        return answer, "closing connection {}\n".format(options.conid)
    if command == "stats":
        answer = _request(options, "GET", "/api/stats")
        return answer, table(
            ["NAME", "LABELS", "VALUE"],
            [[s["name"], ",".join("{}={}".format(k, v) for k, v in sorted(s["labels"].items())),
              "{:g}".format(s["value"])] for s in answer["stats"]])
    if command == "handlers":
        answer = _request(options, "GET", "/api/handlers")
        handlers = table(
            ["HANDLER", "FIRED", "SUCCEEDED", "FAILED", "TIMED-OUT", "DROPPED", "RUNNING"],
            [[h["name"], h.get("fired"), h.get("succeeded"), h.get("failed"),
              h.get("timedOut"), h.get("dropped"), h.get("running")]
             for h in answer["handlers"]])
        queues = table(
            ["QUEUE", "STATE", "DEPTH", "PROCESSED", "FAILURES", "RETRIES", "DROPPED",
             "LAST-ERROR"],
            [[q["name"], "stopped" if q["stopped"] else "full" if q["full"]
              else "failing" if q["failing"] else "ok",
              q["depth"], q["processed"], q["failures"], q["retries"], q["dropped"],
              q["lastError"]]
             for q in answer["queues"]])
        return answer, handlers + "\n" + queues
    if command == "transactions":
        answer = _request(options, "GET", "/api/transactions")
        return answer, table(["NAME", "VALUE"], sorted(
            list(answer["transactions"].items()) + list(answer["limits"].items())))
    if command == "nodes":
        answer = _request(options, "GET", "/api/nodes")
        return answer, table(
            ["SERVER-ID", "URI", "INCARNATION", "STATE", "STARTED", "HEARTBEAT-AGE"],
            [[n["serverId"], n["uri"], n["incarnation"],
              ("alive" if n["alive"] else "dead") + (" (this node)"
                                                     if n["serverId"] == answer["serverId"]
                                                     else ""),
              _when(n["startedAt"]), "{:.1f}s".format(n["heartbeatAge"])]
             for n in answer["nodes"]])
    answer = _request(options, "POST", "/api/reload")
    if not answer["reloaded"]:
        return answer, "nothing to reload\n"
    return answer, table(["PART", "RESULT"], sorted(answer["reloaded"].items()))


def run(options: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """
    Run one admin command and print its result.

    @return: the exit status: C{0}, or C{1} when the request failed (one
        line on C{err} says why).
    """
    try:
        answer, text = _command(options)
    except _Failed as e:
        err.write("sipcore: {}\n".format(e))
        return 1
    if options.json:
        out.write(json.dumps(answer, indent=2, sort_keys=True) + "\n")
    else:
        out.write(text)
    out.flush()
    return 0
