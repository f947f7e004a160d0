# Keyed state kept by the host (the `state` capability): values, lists and maps
# under keys encoded the same way in every SDK, with batch calls for whole batches.
import struct
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

_I64_MAX = (1 << 63) - 1
_I64_MIN = -(1 << 63)


# Imported when the component is made (componentize-py snapshots the
# interpreter after importing app.py): there is no file system at run time to
# import from. None when the plugin does not list `state`.
try:
    from wit_world.imports import state as _IFACE
except ImportError:
    _IFACE = None


def _wit():
    if _IFACE is None:
        raise RuntimeError("this operator does not import `state`: add \"state\" to `capabilities` in its plugin.toml")
    return _IFACE


def key(value) -> bytes:
    """The state key of one value, as every Flumen SDK encodes it.

    One tag byte, then: null `00`; bool `01 00|01`; an integer in the int64
    range `02` + its value with the sign bit flipped, big-endian (so bytes sort
    as numbers); a larger unsigned integer `03` + big-endian u64; a string
    `04` + UTF-8; bytes `05` + the bytes.
    """
    if value is None:
        return b"\x00"
    if isinstance(value, bool):
        return b"\x01\x01" if value else b"\x01\x00"
    if isinstance(value, int):
        if _I64_MIN <= value <= _I64_MAX:
            return b"\x02" + struct.pack(">Q", (value + (1 << 64)) % (1 << 64) ^ (1 << 63))
        if value < (1 << 64):
            return b"\x03" + struct.pack(">Q", value)
        raise OverflowError(f"state key {value} is outside the int64/uint64 range")
    if isinstance(value, str):
        return b"\x04" + value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"\x05" + bytes(value)
    raise TypeError(f"a state key is None, bool, int, str or bytes, not {type(value).__name__}")


def keys(values: Iterable) -> List[bytes]:
    """The state keys of many values (e.g. `column.to_list()`)."""
    return [key(v) for v in values]


# Most keys sent in one host call; larger requests are split.
_CHUNK = 4096


def _chunks(items: Sequence):
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


class Values:
    """A value per key in the state called `name`; use the `*_many` forms once per batch."""

    def __init__(self, name: str):
        self.name = name

    def get(self, key: bytes) -> Optional[bytes]:
        return _wit().value_get(self.name, key)

    def set(self, key: bytes, value: bytes) -> None:
        _wit().value_set(self.name, key, value)

    def delete(self, key: bytes) -> None:
        _wit().value_delete(self.name, key)

    def get_many(self, keys: Sequence[bytes]) -> List[Optional[bytes]]:
        out: List[Optional[bytes]] = []
        for part in _chunks(list(keys)):
            out.extend(_wit().value_get_many(self.name, part))
        return out

    def set_many(self, entries: Sequence[Tuple[bytes, bytes]]) -> None:
        for part in _chunks(list(entries)):
            _wit().value_set_many(self.name, part)

    def delete_many(self, keys: Sequence[bytes]) -> None:
        for part in _chunks(list(keys)):
            _wit().value_delete_many(self.name, part)

    def get_many_i64(self, keys: Sequence[bytes]) -> List[Optional[int]]:
        """Values stored as 8-byte little-endian int64 (`set_many_i64`)."""
        out = []
        for k, v in zip(keys, self.get_many(keys)):
            if v is None:
                out.append(None)
            elif len(v) != 8:
                raise ValueError(f"state `{self.name}`: the value under {k!r} has {len(v)} bytes, not an int64's 8")
            else:
                out.append(struct.unpack("<q", v)[0])
        return out

    def set_many_i64(self, entries: Sequence[Tuple[bytes, int]]) -> None:
        self.set_many([(k, struct.pack("<q", v)) for k, v in entries])


class Lists:
    """An append-only list per key in the state called `name`."""

    def __init__(self, name: str):
        self.name = name

    def get_many(self, keys: Sequence[bytes]) -> List[List[bytes]]:
        return _wit().list_get_many(self.name, list(keys))

    def append_many(self, items: Sequence[Tuple[bytes, bytes]]) -> None:
        _wit().list_append_many(self.name, list(items))

    def clear_many(self, keys: Sequence[bytes]) -> None:
        _wit().list_clear_many(self.name, list(keys))


class Maps:
    """A map per key in the state called `name`, ordered by field bytes."""

    def __init__(self, name: str):
        self.name = name

    def get_many(self, fields: Sequence[Tuple[bytes, bytes]]) -> List[Optional[bytes]]:
        return _wit().map_get_many(self.name, list(fields))

    def put_many(self, entries: Sequence[Tuple[bytes, bytes, bytes]]) -> None:
        _wit().map_put_many(self.name, list(entries))

    def remove_many(self, fields: Sequence[Tuple[bytes, bytes]]) -> None:
        _wit().map_remove_many(self.name, list(fields))

    def entries_many(self, keys: Sequence[bytes]) -> List[List[Tuple[bytes, bytes]]]:
        return _wit().map_entries_many(self.name, list(keys))
