"""What the gateway's parts report, and to whom: the observer contract.

The fan-out, the lookup and the delivery workers report what they did to an
:class:`Observer`; :mod:`onecert.gateway._metrics` (Prometheus) and
:mod:`onecert.gateway._tracing` (OpenTelemetry) implement it. Both sides
depend on this module and not on each other, so the parts that report never
import the parts that count, and the other way round. The values reported
(:class:`UpstreamOutcome`, :class:`ProviderAnswer`) live here for the same reason.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from onecert.gateway._breaker import CircuitBreaker
from onecert.gateway._config import ProviderConfig
from onecert.gateway.store import AttemptOutcome
from onecert.v1 import gateway_pb2, provider_pb2

__all__ = [
    "NO_OBSERVER",
    "ROUTING_DECISIONS",
    "ActiveLookups",
    "Breakers",
    "LookupCounts",
    "NullObserver",
    "Observer",
    "ProviderAnswer",
    "ProviderCall",
    "UpstreamOutcome",
]


class UpstreamOutcome(enum.Enum):
    """How one carrier or provider call ended (``onecert.v1.CallOutcome``)."""

    ANSWERED = gateway_pb2.CALL_OUTCOME_ANSWERED
    TIMED_OUT = gateway_pb2.CALL_OUTCOME_TIMED_OUT
    FAILED = gateway_pb2.CALL_OUTCOME_FAILED
    SKIPPED = gateway_pb2.CALL_OUTCOME_SKIPPED

    @property
    def proto(self) -> gateway_pb2.CallOutcome.ValueType:
        return gateway_pb2.CallOutcome.ValueType(self._value_)


@dataclass(frozen=True)
class ProviderCall:
    """One planned call: ask ``provider`` about ``msisdn``."""

    provider: ProviderConfig
    msisdn: str


@dataclass(frozen=True)
class ProviderAnswer:
    """How one provider call ended.

    Attributes:
        call: what was asked.
        outcome: ANSWERED, TIMED_OUT, FAILED or SKIPPED.
        detail: why, when not answered; free of personal data.
        bindings: the provider's answer (empty unless ANSWERED).
        attempts: calls made (0 when skipped).
        finished_at: ``loop.time()`` when it ended.
    """

    call: ProviderCall
    outcome: UpstreamOutcome
    detail: str
    bindings: tuple[provider_pb2.Binding, ...]
    attempts: int
    finished_at: float


class Observer(Protocol):
    """Where the gateway's parts report what they did (see :class:`NullObserver`)."""

    def carrier_answered(
        self, carrier_id: str, outcome: UpstreamOutcome, attempts: int, seconds: float
    ) -> None:
        """A carrier call of a lookup ended after ``seconds``."""
        ...

    def provider_answered(self, answer: ProviderAnswer, seconds: float) -> None:
        """A provider call of a lookup ended after ``seconds`` (``answer.finished_at``)."""
        ...

    def assertion_rejected(self, reason: str) -> None:
        """An identity assertion was refused (``IdentityError.reason``)."""
        ...

    def unbind_attempted(self, outcome: AttemptOutcome) -> None:
        """A delivery attempt of an unbind ticket ended."""
        ...

    def notice_pushed(self, outcome: str) -> None:
        """A notice push ended: one of :data:`NOTICE_PUSH_OUTCOMES`."""
        ...

    def routing_decided(self, counts: Mapping[str, int]) -> None:
        """Routing decided about one number: providers per decision (:data:`ROUTING_DECISIONS`)."""
        ...


class NullObserver:
    """The observer that records nothing (metrics and tracing off)."""

    def carrier_answered(
        self, carrier_id: str, outcome: UpstreamOutcome, attempts: int, seconds: float
    ) -> None:
        pass

    def provider_answered(self, answer: ProviderAnswer, seconds: float) -> None:
        pass

    def assertion_rejected(self, reason: str) -> None:
        pass

    def unbind_attempted(self, outcome: AttemptOutcome) -> None:
        pass

    def notice_pushed(self, outcome: str) -> None:
        pass

    def routing_decided(self, counts: Mapping[str, int]) -> None:
        pass


NO_OBSERVER: Final = NullObserver()

# What routing decides about a provider for one number: ruled out by its
# filter, a candidate (its filter may hold the number), or asked whatever its
# filter says, for one of the index's reasons (``routing.AskReason``).
ROUTING_DECISIONS: Final = (
    "routed_out",
    "candidate",
    "no_filter",
    "stale",
    "opted_out",
    "retired_key",
    "incomplete",
)


class LookupCounts:
    """What a lookup's messages said, in counts (for its span)."""

    __slots__ = (
        "answered",
        "carriers",
        "failed",
        "numbers",
        "provider_calls",
        "skipped",
        "timed_out",
    )

    def __init__(self) -> None:
        self.numbers = self.carriers = self.provider_calls = 0
        self.answered = self.timed_out = self.failed = self.skipped = 0

    def add(self, response: gateway_pb2.LookupResponse) -> None:
        """Take the counts out of one message of the lookup's stream."""
        update = response.WhichOneof("update")
        if update == "started":
            started = response.started
            self.numbers = len({n.msisdn for n in started.numbers})
            self.carriers = len(started.carriers)
            self.provider_calls = started.provider_calls
        elif update == "summary":
            total = response.summary.total
            self.answered, self.timed_out = total.answered, total.timed_out
            self.failed, self.skipped = total.failed, total.skipped

    def attributes(self) -> dict[str, int]:
        return {f"onecert.{name}": getattr(self, name) for name in self.__slots__}


class Breakers(Protocol):
    """Where the providers' circuit breakers can be read (the fan-out)."""

    def breakers(self) -> Sequence[tuple[str, CircuitBreaker]]:
        """Each provider asked now, by id, with its breaker."""
        ...


class ActiveLookups(Protocol):
    """Where the number of lookups in flight can be read (the lookup service)."""

    @property
    def active_lookups(self) -> int:
        """Lookups being served now."""
        ...
