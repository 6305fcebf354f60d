"""The on-disk pack format: sub-database names, key and value codecs (see README.md beside this file)."""

from imgpack.format.codec import (
    FORMAT_NAME,
    FORMAT_VERSION,
    SUBDBS,
    decode_header,
    decode_index,
    decode_meta,
    encode_header,
    encode_index,
    encode_meta,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SUBDBS",
    "decode_header",
    "decode_index",
    "decode_meta",
    "encode_header",
    "encode_index",
    "encode_meta",
]
