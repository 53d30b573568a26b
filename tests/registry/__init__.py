"""Tests of the provider registry: admin RPCs and CLI, live changes on every replica."""
