"""Judging a pack: validate against the manifest, verify every stored hash, summarize for DVC."""
