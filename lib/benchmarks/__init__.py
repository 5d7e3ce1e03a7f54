"""Benchmarks for ``make bench`` (CPU) and ``make bench-gpu`` (CUDA), one module per topic.

Each module registers functions with :func:`lib.bench.register`; every function takes the device
name and returns a list of :class:`lib.bench.BenchTable`.
"""
