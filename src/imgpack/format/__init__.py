"""The on-disk pack format, version 3: codecs for its keys and values (spec: README.md beside this file)."""
