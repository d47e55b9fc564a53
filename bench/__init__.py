"""Benchmarks: ``python -m bench.inventory_import`` and ``python -m bench.lookup``."""
