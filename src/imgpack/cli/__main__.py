"""`python -m imgpack.cli`: the `imgpack` command."""

from imgpack.cli.main import main

raise SystemExit(main())
