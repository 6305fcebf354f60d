"""Running work in parallel: local worker processes and a Dask cluster."""
