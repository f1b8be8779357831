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

L{withConfig} turns the file into command-line arguments put before the
command line's own, so the options are parsed once, the command line last:

  - C{key = value} becomes C{--key=value}; a repeatable option (C{listen},
    C{domain}, C{handler}, ...) takes one value per line, each becoming one
    C{--key=line}; a flag takes yes or no and becomes C{--key} or nothing.
  - Each key of a C{[handler:NAME]} section becomes
    C{--handler-option=NAME:key=value}.
  - Keys and values are separated by C{=} only (values often hold C{:}).
    Values are taken literally: no C{%} interpolation (a DSN's password may
    hold one), no inline comments; whole-line comments start with C{#} or
    C{;}.  Keys are case-sensitive.
  - An unreadable file, a syntax error, an unknown section or key, a flag
    that is not yes or no, several values for a single-valued option, or a
    value its option's coercion refuses is a L{usage.UsageError} naming the
    file, the section and the key; C{twistd} prints it with the usage and
    exits.
"""

from __future__ import annotations

import configparser
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.python import usage
from twisted.python.reflect import accumulateClassList

from sipcore.plugin import boolean

__all__ = ["ConfigFile", "NOT_IN_FILE", "configArguments", "configPath", "readConfig", "withConfig"]

#: The section of sipcore's own options.
MAIN_SECTION = "sipcore"

#: The prefix of a handler's section.
HANDLER_PREFIX = "handler:"

#: Long options that cannot be set from the file.
NOT_IN_FILE = frozenset({"config", "help", "version"})


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


def configArguments(config: ConfigFile, options: usage.Options) -> list[str]:
    """
    The command-line arguments that say what C{config} says.

    @param options: the L{usage.Options} the arguments are for; its long
        option names, defaults and parameter coercions check the file.
    @raise usage.UsageError: naming the file, section and key, for an
        unknown key, a flag that is not yes or no, several values for an
        option that takes one, or a value its coercion refuses.
    """
    takesValue = {spec.rstrip("="): spec.endswith("=") for spec in options.longOpt}
    # Gathered the way usage.Options gathers them: from the class and its bases.
    parameters: list[list[Any]] = []
    accumulateClassList(type(options), "optParameters", parameters)
    coercions = {p[0]: p[4] for p in parameters if len(p) > 4 and p[4] is not None}
    arguments: list[str] = []
    for key, raw in config.settings.items():
        if key not in takesValue or key in NOT_IN_FILE:
            raise config.error(MAIN_SECTION, key, "unknown key; known keys: {}".format(
                ", ".join(sorted(set(takesValue) - NOT_IN_FILE))))
        if not takesValue[key]:
            try:
                if boolean(raw):
                    arguments.append("--" + key)
            except ValueError:
                raise config.error(
                    MAIN_SECTION, key, "a flag takes yes or no, not {!r}".format(raw.strip())
                ) from None
            continue
        values = [line.strip() for line in raw.splitlines() if line.strip()]
        # An option with a default is a parameter (one value); the others
        # are opt_ methods, which take one value per line.
        if key in options.defaults:
            if len(values) > 1:
                raise config.error(
                    MAIN_SECTION, key, "takes one value, not {}".format(len(values)))
            values = values or [""]
            if key in coercions:
                try:
                    coercions[key](values[0])
                except ValueError as e:
                    raise config.error(
                        MAIN_SECTION, key, "invalid value {!r}: {}".format(values[0], e)
                    ) from None
        arguments += ["--{}={}".format(key, value) for value in values]
    for handler, section in config.handlerOptions.items():
        arguments += [
            "--handler-option={}:{}={}".format(handler, key, value)
            for key, value in section.items()
        ]
    return arguments


def configPath(argv: Sequence[str]) -> str | None:
    """
    The C{FILE} of C{--config FILE} (or C{--config=FILE}) in C{argv}, or
    C{None}.

    @raise usage.UsageError: for C{--config} given more than once.
    """
    paths = []
    for index, argument in enumerate(argv):
        if argument == "--config" and index + 1 < len(argv):
            paths.append(argv[index + 1])
        elif argument.startswith("--config="):
            paths.append(argument[len("--config="):])
    if len(paths) > 1:
        raise usage.UsageError("--config may be given only once")
    return paths[0] if paths else None


def withConfig(argv: Sequence[str], options: usage.Options) -> list[str]:
    """
    The command line C{argv} with the arguments of its C{--config FILE}
    put before it (the command line, parsed last, overrides the file).

    @param options: the L{usage.Options} that will parse the result.
    @raise usage.UsageError: for C{--config} given more than once, or a
        problem with the file (see L{configArguments}).
    """
    path = configPath(argv)
    if path is None:
        return list(argv)
    return configArguments(readConfig(path), options) + list(argv)
