"""Benchmark scripts: ``python benchmarks/<name>.py`` runs one; tests import their ``main``."""
