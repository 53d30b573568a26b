"""Tests of gateway core."""
