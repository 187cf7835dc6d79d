"""Benchmarks of the profile engines: loading, upserts and batch audience evaluation."""
