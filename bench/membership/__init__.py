"""Benchmarks of membership: batch evaluation, streaming upserts, member reads, over HTTP too."""
