"""Accuracy experiments; :func:`benchmarks.experiments.fidelity.headline` reads a report."""
