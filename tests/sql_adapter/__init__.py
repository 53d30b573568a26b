"""Tests of sql adapter."""
