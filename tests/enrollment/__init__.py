"""Tests of self-service joining: the federation CA, the join listener, the gate, renewal."""
