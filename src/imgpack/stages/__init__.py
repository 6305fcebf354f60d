"""The pipeline stages ingest, pack, validate, summarize: each a thin main() over a layer below."""
