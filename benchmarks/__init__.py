"""Throughput measurements, run by hand (`python -m benchmarks.<name>`), not by pytest."""
