"""Benchmarks for Gaia. See bench/README.md."""
