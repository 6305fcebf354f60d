"""The on-disk pack format, version 2: codecs for its keys and values (see README.md beside this file)."""
