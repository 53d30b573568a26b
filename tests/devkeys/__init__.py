"""Tests of devkeys."""
