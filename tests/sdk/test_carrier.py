"""A carrier served by the SDK: ListNumbers with idn validation and warrants on the idn."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from grpc_health.v1 import health_pb2
from structlog.testing import capture_logs

from onecert.sdk import Carrier, Tenure, TenureState
from onecert.sdk.testing import CallError, CarrierEnvironment, serve_in_process
from onecert.v1 import common_pb2, registry_pb2
from tests.sdk.sdk_fakes import CARRIER_ID, IDN, NUMBER, OTHER_NUMBER, FakeMobile


async def test_list_numbers_over_grpc(carrier: Carrier, mobile: FakeMobile) -> None:
    """Tenures come back stamped with the carrier id, with held_until only for former numbers."""
    async with serve_in_process(carrier) as running:
        response = await running.registry_stub().ListNumbers(
            registry_pb2.ListNumbersRequest(idn=IDN),
            metadata=running.metadata(IDN, purpose="lookup"),
            timeout=5,
        )
        health = await running.health_stub().Check(
            health_pb2.HealthCheckRequest(service="onecert.v1.NumberRegistry"), timeout=5
        )
    current, former = sorted(response.tenures, key=lambda t: t.msisdn)
    assert current.msisdn == NUMBER
    assert current.carrier_id == CARRIER_ID
    assert current.state == common_pb2.TENURE_STATE_ACTIVE
    assert not current.HasField("held_until")
    assert former.msisdn == OTHER_NUMBER
    assert former.state == common_pb2.TENURE_STATE_RECYCLED
    assert former.HasField("held_until")
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    ((idn, info),) = mobile.calls
    assert idn == IDN
    assert info.audience == CARRIER_ID


@pytest.mark.parametrize("idn", ["", "A" * 64, "a" * 63, "g" * 64, "a" * 65])
async def test_malformed_idn_is_invalid_argument(
    carrier: Carrier, mobile: FakeMobile, idn: str
) -> None:
    """An idn that is not 64 lowercase hex characters is INVALID_ARGUMENT."""
    env = CarrierEnvironment(carrier)
    with pytest.raises(CallError) as err:
        await env.list_numbers(idn)
    assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert mobile.calls == []


async def test_warrant_must_name_the_idn(carrier: Carrier, mobile: FakeMobile) -> None:
    """A warrant for another idn, or for a phone number, is UNAUTHENTICATED."""
    env = CarrierEnvironment(carrier)
    for token in (env.gateway.warrant("b" * 64), env.gateway.warrant(NUMBER), ""):
        with pytest.raises(CallError) as err:
            await env.list_numbers(IDN, warrant=token)
        assert err.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert mobile.calls == []


async def test_unknown_idn_is_an_empty_list(carrier: Carrier) -> None:
    """An idn the carrier does not know is an empty answer."""
    assert await CarrierEnvironment(carrier).list_numbers("b" * 64) == []


@pytest.mark.parametrize(
    ("tenure", "rule"),
    [
        (Tenure(msisdn="138", held_from=datetime(2020, 1, 1, tzinfo=UTC)), "E.164"),
        (Tenure(msisdn=NUMBER, held_from=datetime(2020, 1, 1)), "naive"),  # noqa: DTZ001  # the point of the case
        (
            Tenure(
                msisdn=NUMBER,
                held_from=datetime(2020, 1, 1, tzinfo=UTC),
                held_until=datetime(2021, 1, 1, tzinfo=UTC),
            ),
            "cannot have held_until",
        ),
        (
            Tenure(
                msisdn=NUMBER,
                held_from=datetime(2020, 1, 1, tzinfo=UTC),
                state=TenureState.CANCELLED,
            ),
            "needs held_until",
        ),
        (
            Tenure(
                msisdn=NUMBER,
                held_from=datetime(2020, 1, 1, tzinfo=UTC),
                held_until=datetime(2019, 1, 1, tzinfo=UTC),
                state="recycled",  # type: ignore[arg-type]  # strings are accepted
            ),
            "before held_from",
        ),
    ],
)
async def test_invalid_tenure_is_internal(
    carrier: Carrier, mobile: FakeMobile, tenure: Tenure, rule: str
) -> None:
    """A tenure breaking the contract is INTERNAL 'invalid tenure' and never sent."""
    mobile.result = [tenure]
    with capture_logs() as logs, pytest.raises(CallError) as err:
        await CarrierEnvironment(carrier).list_numbers(IDN)
    assert err.value.code is grpc.StatusCode.INTERNAL
    assert err.value.details == "adapter returned an invalid tenure"
    (entry,) = [e for e in logs if e["event"] == "adapter.invalid_result"]
    assert rule in entry["rule"]
    assert NUMBER not in str(logs)


def test_carrier_needs_list_numbers() -> None:
    """A carrier without list_numbers cannot be served."""
    with pytest.raises(TypeError, match="list_numbers"):
        CarrierEnvironment(Carrier(carrier_id=CARRIER_ID))
