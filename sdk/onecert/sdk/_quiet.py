"""Keeps gRPC's own C-core log lines ("E1205 ... handshake failed") off the terminal.

An adapter says what went wrong in its own words, and every certificate and
key is checked at start, naming the file at fault; the core's lines only
repeat it, in a form a site's operator cannot act on. Whoever debugs the
transport sets ``GRPC_VERBOSITY`` (or ``GRPC_TRACE``) and sees them again.

The core reads the variable once, when ``grpc`` is first imported, so this
runs first thing in ``onecert.sdk`` (an adapter program imports the SDK
before it serves: ``provider.main()``). The ``onecert`` command applies the
same rule in its own ``main`` before it imports anything that loads gRPC.
"""

from __future__ import annotations

import os


def quiet_grpc_core() -> None:
    """Turn gRPC's core logging off, unless ``GRPC_VERBOSITY`` or ``GRPC_TRACE`` says otherwise."""
    if "GRPC_VERBOSITY" not in os.environ and "GRPC_TRACE" not in os.environ:
        os.environ["GRPC_VERBOSITY"] = "NONE"
