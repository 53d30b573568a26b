"""The conformance kit: play the gateway against any provider or carrier.

The kit speaks only gRPC with the generated ``onecert.v1`` stubs, so it checks
an adapter whatever language it is written in::

    report = await check_provider(
        target="localhost:50051",
        warrant_key=SigningKey.load("keys/warrant.key.pem"),
        known_numbers=["+8613800138000"],
    )
    print(report.to_table())
    assert report.ok

The command line is ``onecert conformance provider|carrier``; ``onecert
conformance filter`` checks a routing filter a provider built, offline
(:func:`check_filter`).

Every check is named by the rule of ``docs/contract.md`` it checks;
``PROVIDER_CHECKS`` and ``CARRIER_CHECKS`` list them as (rule, name).
"""

from onecert.sdk.conformance._carrier import CARRIER_CHECKS, check_carrier
from onecert.sdk.conformance._filter import FILTER_CHECKS, check_filter
from onecert.sdk.conformance._provider import PROVIDER_CHECKS, check_provider
from onecert.sdk.conformance._report import CheckResult, Outcome, Report

__all__ = [
    "CARRIER_CHECKS",
    "FILTER_CHECKS",
    "PROVIDER_CHECKS",
    "CheckResult",
    "Outcome",
    "Report",
    "check_carrier",
    "check_filter",
    "check_provider",
]
