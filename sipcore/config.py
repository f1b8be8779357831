# -*- test-case-name: tests.test_config -*-
"""
The configuration file of C{twistd sipcore --config FILE}.

An INI file (read with L{configparser}) with two kinds of sections::

    [sipcore]
    # keys are the long option names of twistd sipcore, without "--"
    server-id = 3
    db = host=127.0.0.1 dbname=sip user=sipcore
    db-init = yes
    listen =
        udp:5060
        tcp:5060
        ws:8080
    domain =
        example.com
    handler = connection-audit

    [handler:connection-audit]
    # keys are that handler's own options
    batch-size = 200

Rules:

  - Keys of C{[sipcore]} are the long option names.  Options that may be
    repeated on the command line (C{listen}, C{domain}, C{handler},
    C{disable-handler}, C{handler-option}) take one value per line; other
    options take one value; flags take yes or no.
  - Each C{[handler:NAME]} section gives handler NAME its options, like
    C{--handler-option NAME:key=value}.  The handler must be enabled.
  - The command line overrides the file: an option given on the command
    line replaces the file's value (a repeatable option's whole list),
    except handler options, which override the file's per handler and key.
  - Keys and values are separated by C{=} only (values often hold C{:}).
  - Values are taken literally: no C{%} interpolation (a DSN's password may
    hold one), no inline comments; whole-line comments start with C{#} or
    C{;}.  Keys are case-sensitive.
  - A problem (unreadable file, syntax error, unknown section or key, bad
    value) is a L{usage.UsageError} naming the file, the section and the
    key, so C{twistd} prints it with the usage and exits.
"""

from __future__ import annotations

import configparser
import getopt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.python import usage

from sipcore.plugin import boolean

__all__ = ["ConfigFile", "NOT_IN_FILE", "applyConfig", "givenOnCommandLine", "readConfig"]

#: The section of sipcore's own options.
MAIN_SECTION = "sipcore"

#: The prefix of a handler's section.
HANDLER_PREFIX = "handler:"

#: Long options that cannot be set from the file.
NOT_IN_FILE = frozenset({"config", "help", "version"})

#: The option whose file values merge with the command line's.
_HANDLER_OPTION = "handler-option"



@dataclass
class ConfigFile:
    """
    A parsed configuration file, not yet checked against the options.

    @ivar path: the file's path, as given.
    @ivar settings: the C{[sipcore]} keys and their raw values, in file
        order.
    @ivar handlerOptions: handler name to its section's keys and values.
    """

    path: str
    settings: dict[str, str] = field(default_factory=dict)
    handlerOptions: dict[str, dict[str, str]] = field(default_factory=dict)

    def error(self, section: str, key: str | None, problem: str) -> usage.UsageError:
        """
        A usage error naming the file, the section and the key.
        """
        where = "{}: [{}]".format(self.path, section)
        if key is not None:
            where += " {}".format(key)
        return usage.UsageError("{}: {}".format(where, problem))


def readConfig(path: str) -> ConfigFile:
    """
    Read and parse a configuration file.

    @param path: the file's path.
    @return: the L{ConfigFile}.
    @raise usage.UsageError: if the file cannot be read or parsed, or has
        a section other than C{[sipcore]} and C{[handler:NAME]}.
    """
    parser = configparser.ConfigParser(
        interpolation=None,
        default_section="\x00no default section",
        strict=True,
        delimiters=("=",),
    )
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f, source=path)
    except OSError as e:
        raise usage.UsageError(
            "--config {}: cannot read it: {}".format(path, e.strerror or e)
        ) from e
    except UnicodeDecodeError as e:
        raise usage.UsageError("--config {}: not UTF-8 text: {}".format(path, e)) from e
    except configparser.Error as e:
        message = " ".join(str(e).split())
        raise usage.UsageError("--config {}: {}".format(path, message)) from e

    config = ConfigFile(path)
    for section in parser.sections():
        if section == MAIN_SECTION:
            config.settings = dict(parser.items(section))
        elif section.startswith(HANDLER_PREFIX):
            name = section[len(HANDLER_PREFIX) :].strip()
            if not name:
                raise config.error(section, None, "a handler section needs a name: [handler:NAME]")
            config.handlerOptions[name] = dict(parser.items(section))
        else:
            raise config.error(
                section,
                None,
                "unknown section; expected [{}] or [{}NAME]".format(MAIN_SECTION, HANDLER_PREFIX),
            )
    return config


def _lines(raw: str) -> list[str]:
    """
    The non-empty lines of a value.
    """
    return [line.strip() for line in raw.splitlines() if line.strip()]


def _longNames(options: usage.Options) -> dict[str, bool]:
    """
    Every long option name of C{options}, and whether it takes a value.
    """
    names: dict[str, bool] = {}
    for spec in options.longOpt:
        if spec.endswith("="):
            names[spec[:-1]] = True
        else:
            names.setdefault(spec, False)
    return names


def _canonical(options: usage.Options, name: str) -> str:
    """
    The dispatch name of an option spelt C{name} on the command line.
    """
    if name in options.synonyms:
        return str(options.synonyms[name])
    return str(options.synonyms.get(name.replace("-", "_"), name))


def givenOnCommandLine(options: usage.Options, argv: Sequence[str]) -> set[str]:
    """
    The options given in C{argv}, by dispatch name (short options mapped to
    their long names), parsed the way L{usage.Options.parseOptions} does.

    @param argv: the command line (without the program name).
    """
    try:
        opts, _ = getopt.getopt(list(argv), options.shortOpt, options.longOpt)
    except getopt.error:
        return set()
    given = set()
    for opt, _value in opts:
        name = opt[2:] if opt.startswith("--") else opt[1:]
        given.add(_canonical(options, name))
    return given


def _handlerOptionLine(config: ConfigFile, line: str) -> tuple[str, str, str]:
    name, sep, rest = line.partition(":")
    key, eq, value = rest.partition("=")
    if not (name.strip() and sep and key.strip() and eq):
        raise config.error(
            MAIN_SECTION, _HANDLER_OPTION, "expected NAME:key=value, not {!r}".format(line)
        )
    return name.strip(), key.strip(), value.strip()


def applyConfig(options: usage.Options, config: ConfigFile, argv: Sequence[str]) -> None:
    """
    Set the options the command line did not give from the file.

    Values go through the same coercion and C{opt_} methods as on the
    command line, so they are checked the same way.

    @param options: the options, after the command line was parsed.
    @param config: the file, from L{readConfig}.
    @param argv: the command line that was parsed.
    @raise usage.UsageError: naming the file, section and key, for an
        unknown key, a bad value, or a section of a handler that is not
        enabled.
    """
    known = _longNames(options)
    given = givenOnCommandLine(options, argv)
    fileHandlerOptions: list[tuple[str, str, str, str]] = []

    for key, raw in config.settings.items():
        if key not in known or key in NOT_IN_FILE:
            allowed = sorted(set(known) - NOT_IN_FILE)
            raise config.error(
                MAIN_SECTION,
                key,
                "unknown key; known keys: {}".format(", ".join(allowed)),
            )
        if key == _HANDLER_OPTION:
            for line in _lines(raw):
                name, optionKey, value = _handlerOptionLine(config, line)
                fileHandlerOptions.append((MAIN_SECTION, name, optionKey, value))
            continue
        name = _canonical(options, key)
        if name in given:
            continue
        _applyOne(options, config, key, name, raw, takesValue=known[key])

    for handler, values in config.handlerOptions.items():
        for optionKey, value in values.items():
            fileHandlerOptions.append((HANDLER_PREFIX + handler, handler, optionKey, value))

    byHandler = options.get(_HANDLER_OPTION)
    if fileHandlerOptions and not isinstance(byHandler, dict):
        raise config.error(MAIN_SECTION, None, "this sipcore takes no handler options")
    for _section, handler, optionKey, value in fileHandlerOptions:
        assert isinstance(byHandler, dict)
        # The command line's value for the same handler and key wins.
        byHandler.setdefault(handler, {}).setdefault(optionKey, value)

    handlerNames = getattr(options, "handlerNames", None)
    if handlerNames is not None and not options.get("list-handlers"):
        enabled = set(handlerNames())
        for handler in config.handlerOptions:
            if handler not in enabled:
                raise config.error(
                    HANDLER_PREFIX + handler,
                    None,
                    "handler {!r} is not enabled; enable it with 'handler = {}' in "
                    "[{}] or --handler {}".format(handler, handler, MAIN_SECTION, handler),
                )


def _applyOne(
    options: usage.Options,
    config: ConfigFile,
    key: str,
    name: str,
    raw: str,
    takesValue: bool,
) -> None:
    """
    Apply one C{[sipcore]} key.
    """
    dispatch: Any = options._dispatch[name]
    values = _lines(raw)
    if not takesValue:
        try:
            on = boolean(raw)
        except ValueError:
            raise config.error(
                MAIN_SECTION, key, "a flag takes yes or no, not {!r}".format(raw.strip())
            ) from None
        if on:
            dispatch(name, None)
        else:
            if name not in options:
                raise config.error(MAIN_SECTION, key, "this flag cannot be turned off")
            options[name] = 0
        return
    if isinstance(dispatch, usage.CoerceParameter):
        if len(values) > 1:
            raise config.error(MAIN_SECTION, key, "takes one value, not {}".format(len(values)))
        value = values[0] if values else ""
        try:
            options[name] = dispatch.coerce(value)
        except ValueError as e:
            raise config.error(
                MAIN_SECTION, key, "invalid value {!r}: {}".format(value, e)
            ) from None
        return
    for value in values:
        try:
            dispatch(name, value)
        except usage.UsageError as e:
            raise config.error(MAIN_SECTION, key, str(e)) from None
        except ValueError as e:
            raise config.error(
                MAIN_SECTION, key, "invalid value {!r}: {}".format(value, e)
            ) from None
