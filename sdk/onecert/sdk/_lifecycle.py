"""``async with`` support written once for every server, client and harness."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["AsyncResource"]


class AsyncResource:
    """Makes a class usable as ``async with obj:``.

    Entering awaits :meth:`_enter` (nothing unless overridden); leaving, even
    after an exception, awaits :meth:`_exit`, which every subclass names: its
    ``close``, ``stop`` or ``shutdown``.
    """

    async def _enter(self) -> None:
        """Make the object ready before the ``async with`` body runs."""

    async def _exit(self) -> None:
        """Release what the object holds once the ``async with`` body is done."""
        raise NotImplementedError(f"{type(self).__name__} must say how it is released")

    async def __aenter__(self) -> Self:
        await self._enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._exit()
