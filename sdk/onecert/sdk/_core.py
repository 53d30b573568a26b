"""What every adapter call shares: statuses, signature checks, running the
adapter's function under the call's deadline, and masking what it leaks.

Nothing here knows about sockets: the gRPC servicers and the no-network test
environment both go through these functions, so a test of an adapter
exercises the same checks as a call from the gateway.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import math
import re
import traceback
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import grpc
import structlog

from onecert.sdk._idempotency import IdempotencyStore
from onecert.sdk._keys import KeySet
from onecert.sdk._msisdn import mask_numbers_in_text
from onecert.sdk._tls import ServerTLS
from onecert.sdk._types import CallInfo
from onecert.sdk._warrant import WarrantError, WarrantVerifier

log = structlog.get_logger("onecert.sdk")


class CallError(Exception):
    """A call ended with a gRPC status instead of an answer.

    Attributes:
        code: the status the gateway sees.
        details: the message it sees (never personal data).
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class Unavailable(Exception):  # noqa: N818  # named after the gRPC status it produces
    """Raise it from an adapter function to answer UNAVAILABLE ("try again later").

    Use it when a dependency (your database) is down: the gateway retries.
    The message is logged (masked), never sent to the gateway.
    """


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The token of an ``authorization: Bearer <token>`` metadata entry, or ""."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer":
            return token.strip()
    return ""


@dataclass(frozen=True)
class Handler:
    """An adapter function, checked, and whether it wants the :class:`CallInfo`."""

    fn: Callable[..., Awaitable[Any]]
    role: str
    takes_info: bool

    async def __call__(self, value: object, info: CallInfo) -> Any:
        if self.takes_info:
            return await self.fn(value, info)
        return await self.fn(value)


# What a servicer method is given besides its request.
Context = grpc.aio.ServicerContext[Any, Any]


def token_of(context: Context) -> str:
    """The warrant a gRPC call carries, or ""."""
    return bearer_token(context.invocation_metadata())


_ADAPTER_ID = re.compile(r"[a-z0-9._-]{1,64}")


def check_adapter_id(value: object, what: str) -> str:
    """``value`` if it is a valid provider or carrier id, else ValueError."""
    if not isinstance(value, str) or _ADAPTER_ID.fullmatch(value) is None:
        raise ValueError(f"{what} must be 1 to 64 characters of [a-z0-9._-]")
    return value


def _is_async(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004  # an object with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def check_handler(fn: object, *, role: str, arg: str) -> Handler:
    """Check that ``fn`` can be called as ``await fn(arg[, info])``; raise TypeError.

    Args:
        fn: the adapter's function.
        role: what it implements ("list_bindings", "unbind", ...), for messages.
        arg: the name of the value it receives ("msisdn", "request", ...).
    """
    usage = f"async def {role}({arg}, info): ..."
    if not callable(fn):
        raise TypeError(f"{role} must be an async function ({usage}), got {type(fn).__name__}")
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    if not _is_async(fn):
        raise TypeError(f"{role} must be an async function ({usage}); {name} is not async")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot read the signature of {name}: {exc}") from exc
    params = list(signature.parameters.values())
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    variadic = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    kw_required = [
        p.name
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    ]
    capacity = math.inf if variadic else len(positional)
    if kw_required:
        raise TypeError(
            f"{role} {name}{signature} has required keyword-only parameters "
            f"({', '.join(kw_required)}); it is called as {role}({arg}, info)"
        )
    if len(required) > 2:
        raise TypeError(
            f"{role} {name}{signature} takes too many arguments; "
            f"it is called as {role}({arg}) or {role}({arg}, info)"
        )
    if capacity < 1:
        raise TypeError(
            f"{role} {name}{signature} takes no arguments; it is called as {role}({arg}, info)"
        )
    return Handler(fn=fn, role=role, takes_info=capacity >= 2)


def deadline_from(remaining: float | None) -> datetime | None:
    """The wall-clock deadline ``remaining`` seconds from now."""
    if remaining is None:
        return None
    return datetime.now(UTC) + timedelta(seconds=max(0.0, remaining))


def masked_traceback(exc: BaseException) -> str:
    return mask_numbers_in_text("".join(traceback.format_exception(exc)))


async def invoke(handler: Handler, value: object, info: CallInfo) -> Any:
    """Run an adapter function under the call's deadline.

    The adapter's exceptions become statuses with generic messages (the
    details go to the log, masked); cancellation of the call cancels it.
    """
    remaining = info.time_remaining()
    try:
        async with asyncio.timeout(remaining) as scope:
            return await handler(value, info)
    except Unavailable as exc:
        log.warning(
            "adapter.unavailable",
            function=handler.role,
            error=mask_numbers_in_text(str(exc)),
        )
        raise CallError(
            grpc.StatusCode.UNAVAILABLE, "the adapter is temporarily unavailable; try again later"
        ) from None
    except TimeoutError as exc:
        if scope.expired():
            log.warning("adapter.deadline_exceeded", function=handler.role)
            raise CallError(
                grpc.StatusCode.DEADLINE_EXCEEDED, "the adapter did not answer in time"
            ) from None
        _log_failure(handler.role, exc)
        raise CallError(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE) from None
    except Exception as exc:  # noqa: BLE001  # any bug in adapter code becomes INTERNAL
        _log_failure(handler.role, exc)
        raise CallError(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE) from None


INTERNAL_MESSAGE = "internal error in the adapter (details are in its logs)"


def _log_failure(role: str, exc: BaseException) -> None:
    log.error("adapter.failed", function=role, exception=masked_traceback(exc))


def authorize(
    verifier: WarrantVerifier,
    token: str,
    *,
    target: str,
    purposes: frozenset[str],
    remaining: float | None,
) -> CallInfo:
    """Verify the call's warrant for ``target``; the :class:`CallInfo` for the adapter.

    Raises:
        CallError: UNAUTHENTICATED, for any problem with the warrant.
    """
    if not token:
        log.warning("warrant.refused", reason="missing")
        raise CallError(
            grpc.StatusCode.UNAUTHENTICATED,
            "warrant refused: no 'authorization: Bearer <warrant>' metadata",
        )
    try:
        warrant = verifier.verify(token, target=target)
    except WarrantError as exc:
        log.warning("warrant.refused", reason=exc.reason)
        raise CallError(grpc.StatusCode.UNAUTHENTICATED, exc.message) from None
    if warrant.purpose not in purposes:
        log.warning("warrant.refused", reason="purpose", purpose=warrant.purpose)
        raise CallError(
            grpc.StatusCode.UNAUTHENTICATED,
            f"warrant refused: a {warrant.purpose!r} warrant does not allow this call",
        )
    # The interceptor's logging scope picks this up for the rest of the call.
    structlog.contextvars.bind_contextvars(query_id=warrant.query_id)
    return CallInfo(
        audience=warrant.audience,
        purpose=warrant.purpose,
        query_id=warrant.query_id,
        warrant_id=warrant.jti,
        deadline=deadline_from(remaining),
    )


def implementation_name() -> str:
    """``onecert-sdk/<version>`` for Describe."""
    try:
        return f"onecert-sdk/{importlib.metadata.version('onecert')}"
    except importlib.metadata.PackageNotFoundError:
        return "onecert-sdk"


class Adapter:
    """What providers and carriers share: an id, their functions, and the ways to run them.

    A subclass names its kind and its functions; the id, checked, is kept in
    ``_id`` (each subclass documents it as ``id``), and the function of each
    role, checked, in the attribute ``_<role>`` (None until registered).
    """

    #: "provider" or "carrier": named in messages; the id's argument is ``<kind>_id``.
    _kind: ClassVar[str]
    #: The roles of the functions it cannot run without, and of the optional ones.
    _required: ClassVar[tuple[str, ...]]
    _optional: ClassVar[tuple[str, ...]] = ()

    def __init__(self, adapter_id: str) -> None:
        self._id = check_adapter_id(adapter_id, f"{self._kind}_id")

    @property
    def id(self) -> str:
        """The id the gateway knows this adapter by (the warrant audience)."""
        return self._id

    def _implement(self, implementation: object) -> None:
        """Register the methods of ``implementation`` named like the roles; a
        required one missing is a TypeError."""
        for role in self._required:
            if not callable(getattr(implementation, role, None)):
                raise TypeError(
                    f"implementation {type(implementation).__name__} has no {role} method"
                )
        for role in (*self._required, *self._optional):
            method = getattr(implementation, role, None)
            if callable(method):
                getattr(self, role)(method)

    def _register(self, role: str, fn: object, arg: str) -> None:
        """Keep ``fn``, checked, as the ``role`` function; a second one is a TypeError."""
        if getattr(self, f"_{role}") is not None:
            raise TypeError(f"{self._kind} {self._id!r} already has a {role} function")
        setattr(self, f"_{role}", check_handler(fn, role=role, arg=arg))

    def check_complete(self) -> None:
        """Raise TypeError if a required function is missing."""
        missing = [role for role in self._required if getattr(self, f"_{role}") is None]
        if missing:
            raise TypeError(
                f"{self._kind} {self._id!r} has no {' and no '.join(missing)} function; "
                f"register one with @{self._kind}.{missing[0]}"
            )

    def run(
        self,
        *,
        gateway_keys: KeySet | str | Path,
        listen: str | int = 50061,
        gateway_issuer: str = "onecert-gateway",
        tls: ServerTLS | None = None,
        insecure: bool = False,
        idempotency: IdempotencyStore | str | Path | None = None,
        grace: float = 5.0,
        log_json: bool = False,
        log_level: str = "info",
    ) -> None:
        """Serve until SIGTERM or SIGINT, then shut down gracefully.

        Blocks; this is the whole program for most adapters. See
        :class:`onecert.sdk.Server` for the options; ``listen`` may be a port
        (every interface) or ``"host:port"``.
        """
        from onecert.sdk._server import run_until_signal  # noqa: PLC0415  # _server imports this module

        run_until_signal(
            self,
            gateway_keys=gateway_keys,
            listen=listen,
            gateway_issuer=gateway_issuer,
            tls=tls,
            insecure=insecure,
            idempotency=idempotency,
            grace=grace,
            log_json=log_json,
            log_level=log_level,
        )

    def main(self, argv: Sequence[str] | None = None) -> None:
        """Run from the command line: ``--port``, ``--gateway-jwks``, ``--tls-cert`` ...

        ``python my_adapter.py --help`` lists the options. Exits with status 2
        and a clear message when the configuration is unusable.
        """
        from onecert.sdk._server import main  # noqa: PLC0415  # _server imports this module

        main(self, argv)
