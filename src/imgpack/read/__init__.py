"""Reading packs: what training imports (Pack, catalog, ImageDataset), never importing ingest or write."""
