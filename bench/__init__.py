"""Benchmarks of the platform, run by ``make bench`` (``python -m bench``).

Every result is a ratio against a baseline measured in the same run, on the same
machine, interleaved with the measured value: shared machines are too noisy for
absolute numbers to mean much. Benchmarks are registered in :mod:`bench.__main__`.
"""
