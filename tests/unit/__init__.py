"""Tests of the pure parts: no root, no namespaces, no services."""
