"""Benchmark tasks: data, schedules, partitions, metrics."""
