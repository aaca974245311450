"""structlog setup: JSON lines for machines, a readable console format for people."""

from __future__ import annotations

import logging
import sys

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
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, force=True)
    _least_level = numeric


def enabled(level: str) -> bool:
    """Whether a line at level ("info", "error") is written. A line written on every
    call checks first: a dropped one still costs its logger's binding and arguments."""
    return _LEVELS[level] >= _least_level


def get(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
