"""onecert's benchmark suite: the gateway against the bare-gRPC floor, in one run.

``make bench`` (or ``python -m bench``) runs every scenario and writes
``bench/results/latest.json``; ``make bench-quick`` runs each one small.
"""
