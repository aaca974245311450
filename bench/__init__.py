"""Benchmarks: `make bench-tracking` and friends. They print numbers; they assert nothing."""
