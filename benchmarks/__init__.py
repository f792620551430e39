"""Benchmarks of usage-etl: run `python -m benchmarks [--quick] [--json FILE]`."""
