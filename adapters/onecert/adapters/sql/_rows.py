"""Reading the site's rows: account refs, kinds, flags and binding times, as mapped."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo

import structlog

from onecert.adapters.sql._config import SiteConfig
from onecert.adapters.sql._phone import normalize_phone
from onecert.adapters.sql._values import to_bool, to_kind, to_utc_as
from onecert.sdk import Binding

__all__ = ["RowReader"]

log = structlog.get_logger("onecert.adapters.sql")

_MAX_ACCOUNT_REF: Final = 256
_MAX_DISPLAY_NAME: Final = 256


class RowReader:
    """Turns one row of ``list_bindings`` (values by mapped key) into what the SDK sends."""

    def __init__(self, config: SiteConfig) -> None:
        self._config = config
        self._columns = config.columns.mapped()
        self._tz: tzinfo = config.database.tz()

    def ref(self, values: Mapping[str, Any], msisdn: str) -> str | None:
        """The row's account ref, or None when the row is not this number's account."""
        if "phone" in values:
            stored = normalize_phone(values["phone"], default_country=self._config.default_country)
            if stored != msisdn:
                # The query matched a row holding another number (a LIKE, a
                # loose comparison): not this number's account.
                return None
        ref = _text(values["account_ref"])
        if not ref or len(ref) > _MAX_ACCOUNT_REF:
            log.error(
                "a row's account_ref is empty or longer than 256 characters; row skipped",
                column=self._columns["account_ref"],
            )
            return None
        return ref

    def binding(self, values: Mapping[str, Any], msisdn: str) -> Binding | None:
        """The row as a :class:`Binding`, or None when it is not this number's account."""
        defaults = self._config.defaults
        ref = self.ref(values, msisdn)
        if ref is None:
            return None
        display = values.get("display_name")
        name = (_text(display) or "").strip()[:_MAX_DISPLAY_NAME] if display is not None else ""
        kind = defaults.kind
        if values.get("kind") is not None:
            try:
                kind = to_kind(values["kind"], aliases=defaults.kinds) or kind
            except ValueError as exc:
                log.warning(
                    "unknown kind; the default is used",
                    column=self._columns["kind"],
                    problem=str(exc),
                )
        unbindable = defaults.unbindable
        if values.get("unbindable") is not None:
            try:
                flag = to_bool(values["unbindable"])
            except ValueError as exc:
                log.warning(
                    "unreadable flag; the default is used",
                    column=self._columns["unbindable"],
                    problem=str(exc),
                )
            else:
                unbindable = defaults.unbindable if flag is None else flag
        bound_at, not_before, not_after = self._binding_time(values)
        return Binding(
            account_ref=ref,
            kind=kind,
            bound_at=bound_at,
            display_name=name,
            last_used_at=self._timestamp(values, "last_used_at"),
            unbindable=unbindable,
            bound_not_before=not_before,
            bound_not_after=not_after,
        )

    def _binding_time(
        self, values: Mapping[str, Any]
    ) -> tuple[datetime | None, datetime | None, datetime | None]:
        bound_at = self._timestamp(values, "bound_at")
        low = self._timestamp(values, "bound_not_before")
        high = self._timestamp(values, "bound_not_after")
        contradiction = (
            (low is not None and high is not None and high < low)
            or (bound_at is not None and low is not None and bound_at < low)
            or (bound_at is not None and high is not None and bound_at > high)
        )
        if contradiction:
            # Times that disagree say nothing true about whose account it is:
            # sent as unknown, so its details are never shown.
            log.warning(
                "a row's binding times contradict each other; sent as unknown",
                columns=[
                    self._columns[k]
                    for k in ("bound_at", "bound_not_before", "bound_not_after")
                    if k in self._columns
                ],
            )
            return None, None, None
        return bound_at, low, high

    def _timestamp(self, values: Mapping[str, Any], key: str) -> datetime | None:
        if key not in values:
            return None
        spec = self._config.times.get(key)
        try:
            if spec is None:
                return to_utc_as(values[key], timezone=self._tz)
            return to_utc_as(
                values[key],
                format=spec.format,
                zero_is_null=spec.zero_is_null,
                offset_s=spec.offset_s,
                timezone=self._tz if spec.timezone is None else _zone(spec.timezone),
            )
        except (ValueError, TypeError) as exc:
            log.warning(
                "unreadable timestamp; left out", column=self._columns[key], problem=str(exc)
            )
            return None


def _zone(name: str) -> tzinfo:
    return UTC if name == "UTC" else ZoneInfo(name)


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return str(value)
