"""Reading packs: what training imports (Pack, catalog, ImageDataset); never ingest, check, write, stages or cli."""
