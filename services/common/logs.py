"""structlog setup: JSON lines for machines, a readable console format for people."""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO, cast

import structlog

# The least level configure() set the loggers to write; before it, every level is.
_least_level = logging.NOTSET
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def configure(level: str = "info", fmt: str = "json") -> None:
    """Routes structlog (and the stdlib loggers of dependencies) to stderr."""
    global _least_level
    numeric = logging.getLevelName(level.upper())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    stamped: list[structlog.types.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *stamped,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _Unbroken(sys.stderr))),
        cache_logger_on_first_use=False,
    )
    # The dependencies' lines in the same format: one JSON object a line, their
    # tracebacks within (asyncpg's pool logs one on every failed reconnection).
    handler = logging.StreamHandler(_Unbroken(sys.stderr))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *stamped],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), handlers=[handler], force=True)
    logging.captureWarnings(True)  # a library's warnings.warn, as one line of the log
    _least_level = numeric


def enabled(level: str) -> bool:
    """Whether a line at level ("info", "error") is written. A line written on every
    call checks first: a dropped one still costs its logger's binding and arguments."""
    return _LEVELS[level] >= _least_level


def get(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)


class _Unbroken:
    """A stream whose writes, once its reader is gone (its terminal closed: EIO; the
    pipe's reader exited: EPIPE), go nowhere: the lines are lost either way, and a
    line that raised stopped what logged it, as a server's graceful stop on SIGHUP."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError:
            self._stream = _nowhere()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError:
            self._stream = _nowhere()


def _nowhere() -> TextIO:
    return open(os.devnull, "w")  # the log's stream for the rest of the process
