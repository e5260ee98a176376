"""Benchmarks and experiments of disyre, run as modules from the repository root.

- ``benchmarks.speed``: speed and memory benchmarks (``python -m benchmarks.speed.run_all``).
- ``benchmarks.experiments``: accuracy experiments (``python -m benchmarks.experiments.fidelity``).
- ``benchmarks.tools``: test tooling (``python -m benchmarks.tools.mutants``).
"""
