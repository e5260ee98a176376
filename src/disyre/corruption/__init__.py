"""Synthetic corruption of clean patches: schedule, shapes, texture, intensity bias, DAG."""
