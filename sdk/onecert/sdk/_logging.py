"""Structured logging for every onecert process (structlog).

JSON lines in production, readable lines in development. A last processor
masks phone numbers in every value (E.164 and Chinese mobile forms, grouped or
not; see :func:`onecert.sdk._msisdn.mask_numbers_in_text`), so a raw msisdn
cannot reach a log even when a message is written carelessly, while ids,
hashes and column names that merely hold digits stay readable.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from onecert.sdk._msisdn import mask_numbers_in_text


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_numbers_in_text(value)
    if isinstance(value, int) and not isinstance(value, bool):
        # A phone number stored as an integer (13800138000) is masked like
        # text; other integers (counts, sizes, nanoseconds) stay numbers.
        masked = mask_numbers_in_text(str(value))
        return value if masked == str(value) else masked
    if isinstance(value, list | tuple):
        return [_mask_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _mask_value(v) for k, v in value.items()}
    return value


def mask_phone_numbers(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask phone numbers in every value but the timestamp."""
    for key, value in event_dict.items():
        if key != "timestamp":
            event_dict[key] = _mask_value(value)
    return event_dict


def configure_logging(*, json: bool = False, level: str = "info") -> None:
    """Configure structlog for this process.

    Args:
        json: one JSON object per line (production) instead of readable text.
        level: the minimum level: "debug", "info", "warning" or "error".
    """
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_phone_numbers,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
