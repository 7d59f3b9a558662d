"""Benchmarks: each module runs with ``python -m bench.<name>``, prints its results as JSON
and as a table (through ``bench.report``) and records them in ``bench/results/``.

Timing thresholds live here, never in unit tests: machines are shared and noisy.
"""
