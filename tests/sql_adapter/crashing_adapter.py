"""``onecert adapter sql`` that can die between applying an unbind and recording its answer.

Run as ``python -m tests.sql_adapter.crashing_adapter site.toml``. It prints
"listening on HOST:PORT" once it serves. With ``ONECERT_TEST_KILL_AFTER_APPLY``
set, the first unbind that commits SIGKILLs the process right after the
commit, before the SDK records the answer: the window a real crash can hit.
Every call of the site's ``unbind`` appends "<request_id> resumed=<bool>" to
the file named by ``ONECERT_TEST_UNBIND_LOG``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from onecert.adapters.sql import SqlSite, load_config, serve
from onecert.sdk import CallInfo, Server, UnbindOutcome, UnbindRequest, UnbindResult

_site_unbind = SqlSite.unbind


def _note_call(request: UnbindRequest) -> None:
    with Path(os.environ["ONECERT_TEST_UNBIND_LOG"]).open("a") as calls:
        calls.write(f"{request.request_id} resumed={request.resumed}\n")


async def _unbind_then_maybe_die(
    self: SqlSite, request: UnbindRequest, info: CallInfo
) -> UnbindResult:
    _note_call(request)
    result = await _site_unbind(self, request, info)
    if os.environ.get("ONECERT_TEST_KILL_AFTER_APPLY") and result.outcome is UnbindOutcome.DONE:
        os.kill(os.getpid(), signal.SIGKILL)
    return result


def _ready(server: Server) -> None:
    print(f"listening on {server.address}", flush=True)


def main() -> None:
    """Serve the site named on the command line until SIGTERM (or a planned SIGKILL)."""
    SqlSite.unbind = _unbind_then_maybe_die  # type: ignore[method-assign]  # the crash hook
    asyncio.run(serve(load_config(sys.argv[1]), ready=_ready))


if __name__ == "__main__":
    main()
