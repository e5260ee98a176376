"""Test tooling: deliberate bugs (mutants) and the GPU check."""
