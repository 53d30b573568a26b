"""Tests of unbind."""
