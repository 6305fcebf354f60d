"""Using imgpack in a user's own DVC project: `imgpack init` and the files it writes."""
