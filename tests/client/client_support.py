"""A provider's lookup result built by hand, for the tests of what `onecert lookup` prints."""

from __future__ import annotations

from datetime import timedelta

from onecert.sdk.client import CallOutcome, Result

NUMBER = "+8613800138000"


def provider_result(
    provider: str,
    *,
    outcome: CallOutcome = CallOutcome.ANSWERED,
    detail: str = "",
    handles: tuple[str, ...] = (),
) -> Result:
    """``provider``'s result for :data:`NUMBER`: no account of the caller's, one
    previous holder's account per release handle."""
    return Result(
        query_id="q",
        provider_id=provider,
        provider_name=provider.title(),
        category=None,
        msisdn=NUMBER,
        outcome=outcome,
        detail=detail,
        accounts=(),
        previous_holder_count=len(handles),
        release_handles=handles,
        elapsed=timedelta(milliseconds=5),
    )
