"""Writing packs: LMDB files, shards and their layout, the catalog, one publish; pack, one pass, build."""
