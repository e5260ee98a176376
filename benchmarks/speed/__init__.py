"""Speed and memory benchmarks; shared machine helpers in :mod:`benchmarks.speed.machine`."""
