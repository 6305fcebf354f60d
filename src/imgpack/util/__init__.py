"""Small shared utilities below every other layer: JSON files, digests, URLs, cores, progress, entry points."""
