"""Helpers the tests and the benchmarks share: free ports, waiting for a condition, stopping processes."""
