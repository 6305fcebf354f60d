"""The pipeline stages: ingest, pack, validate, summarize; each a plain function plus an entry point."""

import os

# imgpack's own processes (every stage and the CLI import this package first) use the system
# allocator for Arrow: its default mimalloc pool keeps freed arenas resident, +25 MB of peak RSS
# measured for a 60,000-image build. It must be chosen before pyarrow is imported.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
