"""The pipeline stages: ingest, pack, validate, summarize; each a plain function plus an entry point."""
