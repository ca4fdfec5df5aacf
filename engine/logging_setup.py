"""Logging configured in one place: structlog and the standard library's ``logging`` render the same
lines, for the engine's own log calls, uvicorn's and any other library's.

Two entry points, one for each kind of caller:

- :func:`configure_logging` is for applications; the CLI calls it before every command (``serve``,
  ``worker`` and the one-shot commands). Lines go to stderr, so that a command's stdout stays its
  result: a human console renderer on a terminal, JSON lines otherwise, or as chosen with
  ``--log-format console|json`` (``$CAMPAIGN_ENGINE_LOG_FORMAT``); the level from ``--log-level``
  (``$CAMPAIGN_ENGINE_LOG_LEVEL``). structlog hands its events to ``logging`` and a
  :class:`structlog.stdlib.ProcessorFormatter` renders both those and plain ``logging`` records
  (uvicorn's ``uvicorn``, ``uvicorn.error`` and ``uvicorn.access``), so there is one format. Context
  bound with :mod:`structlog.contextvars` is merged into every line, plain records included: the
  API binds ``request_id`` per call, and binding ``workspace_id``, ``campaign_id`` or ``sender_id``
  around a tick's or a delivery's work is all it takes for those lines to name them.
- :func:`quiet_library_logging` is for the library itself. A program that embeds the engine
  (``async with CampaignEngine(...)``) and configures nothing must see nothing, yet structlog's
  built-in default prints every event to stdout. So, only when the application has not configured
  structlog, the engine sends structlog's events to the standard library's ``campaign_engine``
  logger, which carries a ``NullHandler``: the Python logging HOWTO's way for libraries
  ("Configuring Logging for a Library"). The log calls stay; an application sees them as soon as it
  configures ``logging`` (``logging.basicConfig()``) or structlog, or calls :func:`configure_logging`.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from enum import StrEnum
from typing import TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LIBRARY_LOGGER = "campaign_engine"  # every engine logger's name starts with it
FORMAT_ENV = "CAMPAIGN_ENGINE_LOG_FORMAT"
LEVEL_ENV = "CAMPAIGN_ENGINE_LOG_LEVEL"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
# Libraries that say at info what the engine already reports (the runtime's scheduler announces
# every wake-up, httpx every webhook request): shown from warning unless the level is debug.
CHATTY_LOGGERS = ("apscheduler", "httpx", "httpcore")
# A LogRecord's own attributes: an ``extra`` key with one of these names makes logging raise.
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class LogFormat(StrEnum):
    """How lines are rendered: ``auto`` is console on a terminal, JSON lines otherwise."""

    auto = "auto"
    console = "console"
    json = "json"


class LogLevel(StrEnum):
    """The lowest level written, for the engine's lines and every other library's alike."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"


@dataclass(frozen=True)
class LoggingChoice:
    """What :func:`configure_logging` settled on, for callers that pass it on (uvicorn's level)."""

    format: LogFormat
    level: LogLevel

    @property
    def level_number(self) -> int:
        return int(logging.getLevelName(self.level.value.upper()))


class CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each line, never to the stream that was
    current at configuration: test runners and ``contextlib.redirect_stderr`` swap it, and a line
    written to a closed stand-in would be lost with a logging error instead."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        """StreamHandler assigns its stream in ``__init__`` and ``setStream``: the property wins."""


def _uvicorn_access_fields(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """uvicorn's access line as fields (``client``, ``method``, ``path``, ``http_version``,
    ``status``) under the event ``http_request``, instead of an Apache-style sentence; the
    positional arguments of every other plain record are dropped (its message is already rendered)."""
    arguments = event_dict.pop("positional_args", ())
    record = event_dict.get("_record")
    if record is not None and record.name == "uvicorn.access" and len(arguments) == 5:
        client, method, path, http_version, status = arguments
        event_dict.update(event="http_request", client=client, method=method, path=path,
                          http_version=http_version, status=status)
    return event_dict


def _clear_of_record_fields(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Rename keys that ``logging`` reserves (``name``, ``module``, ...) before they become ``extra``:
    ``logging`` raises on them, and a log call must never break the engine."""
    for key in [key for key in event_dict if key in _RECORD_FIELDS and key != "exc_info"]:
        event_dict[f"{key}_"] = event_dict.pop(key)
    return event_dict


def _shared_processors() -> list[Processor]:
    """Run on both structlog's events and plain ``logging`` records, before rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def resolve_choice(log_format: LogFormat | str | None, level: LogLevel | str | None, *,
                   default_level: LogLevel | str = LogLevel.info, stream: TextIO | None = None) -> LoggingChoice:
    """The format and level to use: the argument, else the environment variable, else the default.
    ``auto`` becomes ``console`` when ``stream`` (stderr) is a terminal and ``json`` otherwise.
    An unknown value raises ``ValueError`` naming the accepted ones."""
    raw_format = str(getattr(log_format, "value", log_format) or os.environ.get(FORMAT_ENV) or "auto").lower()
    raw_level = str(getattr(level, "value", level) or os.environ.get(LEVEL_ENV)
                    or getattr(default_level, "value", default_level)).lower()
    try:
        chosen_format = LogFormat(raw_format)
    except ValueError:
        raise ValueError(f"log format must be one of {', '.join(f.value for f in LogFormat)}, "
                         f"not {raw_format!r}") from None
    try:
        chosen_level = LogLevel(raw_level)
    except ValueError:
        raise ValueError(f"log level must be one of {', '.join(lv.value for lv in LogLevel)}, "
                         f"not {raw_level!r}") from None
    if chosen_format is LogFormat.auto:
        target = stream if stream is not None else sys.stderr
        try:
            on_terminal = target.isatty()
        except (AttributeError, ValueError):  # closed or replaced by something without isatty
            on_terminal = False
        chosen_format = LogFormat.console if on_terminal else LogFormat.json
    return LoggingChoice(chosen_format, chosen_level)


def configure_logging(log_format: LogFormat | str | None = None, level: LogLevel | str | None = None, *,
                      default_level: LogLevel | str = LogLevel.info) -> LoggingChoice:
    """Configure structlog and ``logging`` together for an application (the CLI, or a program that
    embeds the engine and wants its lines in this format). Calling it again replaces the earlier
    choice; handlers other programs added to the root logger are left in place.

    uvicorn's loggers lose their own handlers and propagate to the root, so its lines (access lines
    included) come out through the same renderer; pass ``log_config=None`` to ``uvicorn.Config`` so
    that uvicorn does not install its own again.
    """
    choice = resolve_choice(log_format, level, default_level=default_level)
    renderer: Processor
    if choice.format is LogFormat.console:
        try:
            colors = sys.stderr.isatty()
        except (AttributeError, ValueError):
            colors = False
        renderer = structlog.dev.ConsoleRenderer(colors=colors)
        render_chain: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]
    else:
        renderer = structlog.processors.JSONRenderer()
        render_chain = [structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        structlog.processors.format_exc_info, renderer]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), _uvicorn_access_fields],
        processors=render_chain, pass_foreign_args=True)
    handler = CurrentStderrHandler()
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for earlier in [found for found in root.handlers if isinstance(found, CurrentStderrHandler)]:
        root.removeHandler(earlier)
    root.addHandler(handler)
    root.setLevel(choice.level_number)
    for name in UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
        uvicorn_logger.setLevel(logging.NOTSET)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if choice.level is LogLevel.debug else logging.WARNING)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # not cached: a later configure_logging (or structlog.testing.capture_logs) takes effect on
        # the module-level loggers too; the engine logs far too little for the lookup to matter
        cache_logger_on_first_use=False,
    )
    return choice


def quiet_library_logging() -> None:
    """Keep the engine silent inside an application that configured no logging, without dropping
    its log calls. Safe to call any number of times; does nothing to a structlog configuration the
    application made (``structlog.is_configured()``).

    The engine's events then go to ``logging``'s ``campaign_engine`` logger as plain records (the
    event name as the message, its fields as ``extra``, structlog's ``render_to_log_kwargs``), so
    an application's own ``logging`` setup shows them in its format and at its level.
    """
    library_logger = logging.getLogger(LIBRARY_LOGGER)
    if not any(isinstance(found, logging.NullHandler) for found in library_logger.handlers):
        library_logger.addHandler(logging.NullHandler())
    if structlog.is_configured():
        return
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            _clear_of_record_fields,
            structlog.stdlib.render_to_log_kwargs,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )

