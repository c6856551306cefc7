"""Benchmarks: side-by-side measurements, not part of the test suite."""
