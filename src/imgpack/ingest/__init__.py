"""Finding the images and what is known of them: walk, labels, probe, the manifest and ingest's cache."""
