"""Benchmarks of imgpack against the approaches it grew from, tar, HDF5 and DVC folder tracking."""
