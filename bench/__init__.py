"""Benchmarks: speed lives here, not in tests."""
