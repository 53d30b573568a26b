"""Routing filters for providers: build, serialize and read the keyed membership filter.

A provider publishes to the gateway a Bloom filter of the numbers bound at it,
keyed with the federation's routing key, so the gateway asks it only about
numbers it may hold. The format is specified in ``docs/routing.md``; this is
its reference implementation (pure Python, no dependency beyond the SDK)::

    result = await build_filter(list_numbers, key=key, key_version=3, size_hint=last_count)
    payload = result.filter.to_bytes()

    additions = FilterAdditions.of(key, 3, ["+8613800138000"])
"""

from onecert.sdk._filter import (
    DEFAULT_FP_RATE,
    FORMAT_VERSION,
    SMALL_SET_BELOW,
    SMALL_SET_FP_RATE,
    SNAPSHOT_FORMATS,
    BuildResult,
    FilterAdditions,
    FilterBuilder,
    FilterFormatError,
    RoutingFilter,
    bit_positions,
    bits_for,
    build_filter,
    default_fp_rate,
    expected_fp_rate,
    fold,
    hashes_for,
    key_check,
    routing_digest,
)

__all__ = [
    "DEFAULT_FP_RATE",
    "FORMAT_VERSION",
    "SMALL_SET_BELOW",
    "SMALL_SET_FP_RATE",
    "SNAPSHOT_FORMATS",
    "BuildResult",
    "FilterAdditions",
    "FilterBuilder",
    "FilterFormatError",
    "RoutingFilter",
    "bit_positions",
    "bits_for",
    "build_filter",
    "default_fp_rate",
    "expected_fp_rate",
    "fold",
    "hashes_for",
    "key_check",
    "routing_digest",
]
