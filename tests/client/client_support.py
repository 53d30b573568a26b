"""What the tests of the `onecert` command share: running it in this process, and a
provider's lookup result built by hand (for what `onecert lookup` prints)."""

from __future__ import annotations

import contextlib
import io
from datetime import timedelta

from onecert.cli import main
from onecert.sdk.client import CallOutcome, Result

NUMBER = "+8613800138000"


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``onecert ARGV`` in this process: its exit status, what it printed and its errors."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


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
