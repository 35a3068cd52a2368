"""The ``hpack`` library behind the API of ``arun.server.http2.hpack`` (HPACKError, Decoder, Encoder).

A stand-in until the lean codec lands: ``connection.py`` imports its HPACK codec from one line, so
switching between this adapter and the lean codec is that line. The library raises more than its
own ``HPACKError`` on a malformed block (an index out of range surfaces as ``IndexError``, a bad
length as ``TypeError``), so every failure of a decode becomes this module's ``HPACKError``.
"""

from __future__ import annotations

from collections.abc import Iterable

import hpack


class HPACKError(Exception):
    """A header block that cannot be decoded (a COMPRESSION_ERROR for the connection)."""


class Decoder:
    """Decodes the header blocks of one connection (its dynamic table lives here)."""

    def __init__(self, max_table_size: int = 4096, max_header_list_size: int = 65536) -> None:
        self._decoder = hpack.Decoder(max_header_list_size=max_header_list_size)
        self._decoder.max_allowed_table_size = max_table_size

    @property
    def max_allowed_table_size(self) -> int:
        """The largest dynamic table the peer may ask for (our SETTINGS_HEADER_TABLE_SIZE)."""
        return int(self._decoder.max_allowed_table_size)

    @max_allowed_table_size.setter
    def max_allowed_table_size(self, size: int) -> None:
        self._decoder.max_allowed_table_size = size

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        try:
            return [(bytes(n), bytes(v)) for n, v in self._decoder.decode(block, raw=True)]
        except (hpack.HPACKError, IndexError, TypeError, ValueError) as exc:
            raise HPACKError(str(exc)) from exc


class Encoder:
    """Encodes the header lists we send on one connection."""

    def __init__(self) -> None:
        self._encoder = hpack.Encoder()

    def encode(self, headers: Iterable[tuple[str | bytes, str | bytes]]) -> bytes:
        return bytes(self._encoder.encode(list(headers)))

    def set_max_table_size(self, size: int) -> None:
        """The peer's SETTINGS_HEADER_TABLE_SIZE: our dynamic table must not grow past it."""
        self._encoder.header_table_size = size


__all__ = ["Decoder", "Encoder", "HPACKError"]
