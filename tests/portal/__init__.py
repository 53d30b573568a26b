"""Tests of portal."""
