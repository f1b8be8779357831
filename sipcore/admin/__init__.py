# -*- test-case-name: tests.test_admin -*-
"""
The admin interface: a JSON API over HTTP (L{sipcore.admin.api}), health
checks and a systemd readiness notice (L{sipcore.admin.service}), and the
settings that choose where it listens (L{AdminSettings}).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

__all__ = ["DEFAULT_LISTEN", "OFF", "AdminSettings", "AdminSettingsError", "TOKEN_ENVIRONMENT",
           "adminSettings", "isLoopbackEndpoint"]

#: The environment variable holding the admin token when no file is given.
TOKEN_ENVIRONMENT = "SIPCORE_ADMIN_TOKEN"

#: Where the admin API listens when C{--admin-listen} is not given.
DEFAULT_LISTEN = "tcp:8060:interface=127.0.0.1"

#: The C{--admin-listen} value that turns the admin API off.
OFF = "none"


class AdminSettingsError(ValueError):
    """
    The admin options cannot be used (the message says why).
    """


@dataclass(frozen=True)
class AdminSettings:
    """
    Where the admin API listens and the token it requires.

    @ivar listen: a Twisted server endpoint description; C{""}: off.
    @ivar token: the bearer token every request except the health checks
        must carry, or C{None}: none required.
    @ivar required: whether a failure to listen stops the server's start
        (an endpoint given explicitly); otherwise (the default endpoint) the
        server logs a warning and runs without the admin API.
    """

    listen: str = ""
    token: str | None = None
    required: bool = True

    def __repr__(self) -> str:
        return "AdminSettings(listen={!r}, token={}, required={})".format(
            self.listen, "set" if self.token else None, self.required)


def _fields(description: str) -> tuple[str, dict[str, str]]:
    """
    The endpoint type and the C{key=value} arguments of an endpoint
    description (backslash escapes the next character).
    """
    parts: list[str] = []
    current = ""
    escaped = False
    for char in description:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    arguments = {}
    for part in parts[1:]:
        key, equals, value = part.partition("=")
        if equals:
            arguments[key] = value
    return parts[0].lower(), arguments


def isLoopbackEndpoint(description: str) -> bool:
    """
    Whether a server endpoint description listens on loopback only: a
    C{unix:} socket, or a C{tcp:}/C{tcp6:}/C{ssl:} endpoint whose
    C{interface} is a loopback address.  Without an C{interface} it listens
    on every address: not loopback.
    """
    kind, arguments = _fields(description)
    if kind == "unix":
        return True
    interface = arguments.get("interface", "")
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False


def adminSettings(listen: str, tokenFile: str = "",
                  environ: dict[str, str] | None = None) -> AdminSettings:
    """
    The admin settings from C{--admin-listen} and C{--admin-token-file} (or
    the C{SIPCORE_ADMIN_TOKEN} environment variable).

    @param listen: the endpoint description given, C{""} when none was (the
        API then listens on L{DEFAULT_LISTEN} if it can), or L{OFF}.

    @raise AdminSettingsError: the token file cannot be read or is empty, or
        the API would listen beyond loopback without a token.
    """
    env = os.environ if environ is None else environ
    if listen.strip().lower() == OFF:
        return AdminSettings()
    required = bool(listen)
    listen = listen or DEFAULT_LISTEN
    token: str | None = None
    if tokenFile:
        try:
            with open(tokenFile, encoding="utf-8") as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise AdminSettingsError(
                "--admin-token-file {!r}: {}".format(tokenFile, e.__class__.__name__
                                                     if not str(e) else e)) from None
        if not token:
            raise AdminSettingsError("--admin-token-file {!r} is empty".format(tokenFile))
    elif env.get(TOKEN_ENVIRONMENT, "").strip():
        token = env[TOKEN_ENVIRONMENT].strip()
    if token is None and not isLoopbackEndpoint(listen):
        raise AdminSettingsError(
            "--admin-listen {!r} listens beyond loopback: give a token with "
            "--admin-token-file FILE or {} (or listen on interface=127.0.0.1)".format(
                listen, TOKEN_ENVIRONMENT))
    return AdminSettings(listen=listen, token=token, required=required)
