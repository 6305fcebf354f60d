"""`python -m bench`: run the benchmark (see bench/run.py --help)."""

from bench.run import main

raise SystemExit(main())
