# Columns of a batch as typed views over the Arrow buffers the host copied in
# (memoryviews, no per-row copies), and builders for the columns an operator computes.
from array import array
from typing import Iterable, List, Optional, Sequence

from wit_world.imports import types as wit

from .schema import Field

# The `array`/`memoryview` format of each fixed-width Arrow type.
_FORMATS = {
    wit.DataType_Int8: "b", wit.DataType_Int16: "h", wit.DataType_Int32: "i", wit.DataType_Int64: "q",
    wit.DataType_Uint8: "B", wit.DataType_Uint16: "H", wit.DataType_Uint32: "I", wit.DataType_Uint64: "Q",
    wit.DataType_Float32: "f", wit.DataType_Float64: "d",
    wit.DataType_Date32: "i", wit.DataType_Date64: "q", wit.DataType_Time32: "i", wit.DataType_Time64: "q",
    wit.DataType_Timestamp: "q", wit.DataType_Duration: "q",
}
_STRINGS = (wit.DataType_Utf8, wit.DataType_LargeUtf8)
_BINARIES = (wit.DataType_Binary, wit.DataType_LargeBinary)


def _bit(bits: bytes, i: int) -> bool:
    return (bits[i >> 3] >> (i & 7)) & 1 == 1


def pack_bits(flags: Iterable) -> bytes:
    """Truthy/falsy values → an LSB-first bitmap (Arrow's validity and mask layout)."""
    flags = list(flags)
    out = bytearray((len(flags) + 7) // 8)
    for i, f in enumerate(flags):
        if f:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


class Column:
    """One column of a batch: its field, length, nulls and typed values.

    `values` is a memoryview over the data buffer for fixed-width types
    (e.g. format `q` for int64), so `sum(col.values)` or slicing reads the
    bytes the host copied in, without a Python object per row until you ask
    for one. `to_list()` gives Python values with `None` for nulls.
    """

    __slots__ = ("field", "raw", "children", "len", "_offset")

    def __init__(self, field: Field, raw: wit.Column, children: List["Column"]):
        self.field = field
        self.raw = raw
        self.children = children
        self.len = raw.len
        self._offset = raw.offset

    def __len__(self) -> int:
        return self.len

    @property
    def null_count(self) -> int:
        if self.raw.validity is None:
            return 0
        return sum(1 for i in range(self.len) if not self.is_valid(i))

    def is_valid(self, i: int) -> bool:
        v = self.raw.validity
        return v is None or _bit(v.bits, v.offset + i)

    def is_null(self, i: int) -> bool:
        return not self.is_valid(i)

    def validity(self) -> Optional[List[bool]]:
        """Per-row validity, or None when the column has no nulls."""
        v = self.raw.validity
        if v is None:
            return None
        bits, off = v.bits, v.offset
        return [(bits[(off + i) >> 3] >> ((off + i) & 7)) & 1 == 1 for i in range(self.len)]

    @property
    def values(self) -> memoryview:
        """The values of a fixed-width column (nulls hold unspecified values)."""
        fmt = _FORMATS.get(type(self.field.type))
        if fmt is None:
            raise TypeError(f"column `{self.field.name}` is {self.field!r}: not a fixed-width type")
        view = memoryview(self.raw.buffers[0]).cast(fmt)
        return view[self._offset:self._offset + self.len]

    def offsets(self) -> memoryview:
        """The offsets of a string or binary column (len + 1 of them)."""
        fmt = "q" if isinstance(self.field.type, (wit.DataType_LargeUtf8, wit.DataType_LargeBinary)) else "i"
        return memoryview(self.raw.buffers[0]).cast(fmt)[self._offset:self._offset + self.len + 1]

    def data(self) -> bytes:
        """The values buffer of a string or binary column."""
        return self.raw.buffers[1]

    def to_list(self) -> list:
        """Python values, `None` for nulls: int, float, bool, str, bytes, or a dict per struct row."""
        t = self.field.type
        valid = self.validity()
        if isinstance(t, wit.DataType_Boolean):
            bits = self.raw.buffers[0]
            out = [_bit(bits, self._offset + i) for i in range(self.len)]
        elif type(t) in _FORMATS:
            out = self.values.tolist()
        elif isinstance(t, _STRINGS + _BINARIES):
            offs = self.offsets()
            data = self.data()
            if isinstance(t, _STRINGS):
                out = [str(data[offs[i]:offs[i + 1]], "utf-8") for i in range(self.len)]
            else:
                out = [data[offs[i]:offs[i + 1]] for i in range(self.len)]
        elif isinstance(t, wit.DataType_FixedSizeBinary):
            w = t.value
            data = self.raw.buffers[0]
            start = self._offset * w
            out = [data[start + i * w:start + (i + 1) * w] for i in range(self.len)]
        elif isinstance(t, wit.DataType_Record):
            kids = [c.to_list() for c in self.children]
            names = [c.field.name for c in self.children]
            out = [{n: k[i] for n, k in zip(names, kids)} for i in range(self.len)]
        else:
            raise TypeError(f"column `{self.field.name}`: to_list() does not read {self.field!r}")
        if valid is not None:
            out = [v if ok else None for v, ok in zip(out, valid)]
        return out

    def blob_refs(self) -> list:
        """A blob-reference column (`flumen.blob`) as `BlobRef`s for `flumen.blobs`, `None` for nulls."""
        if not self.field.is_blob():
            raise TypeError(f"column `{self.field.name}` is not a flumen.blob column")
        from .blobs import BlobRef

        return [None if r is None else BlobRef(r["digest"], r["size"], r["media_type"], r["token"])
                for r in self.to_list()]


class Batch:
    """The columns an operator reads, by name or position, and the row count."""

    __slots__ = ("num_rows", "columns", "_names")

    def __init__(self, num_rows: int, columns: List[Column]):
        self.num_rows = num_rows
        self.columns = columns
        self._names = {c.field.name: c for c in columns}

    def __len__(self) -> int:
        return self.num_rows

    def column(self, key) -> Column:
        """The column at position `key` (among the columns read) or named `key`."""
        if isinstance(key, int):
            return self.columns[key]
        try:
            return self._names[key]
        except KeyError:
            raise KeyError(f"this batch has no column `{key}` (it holds {list(self._names)})") from None

    __getitem__ = column


def read_batch(fields: Sequence[Field], batch: wit.Batch) -> Batch:
    """Builds the column tree of `batch`, whose flat columns follow `fields` in pre-order."""
    cols = batch.columns
    pos = 0

    def take(f: Field) -> Column:
        nonlocal pos
        raw = cols[pos]
        pos += 1
        return Column(f, raw, [take(c) for c in f.children])

    top = [take(f) for f in fields]
    if pos != len(cols):
        raise ValueError(f"batch has {len(cols)} columns, its schema {pos}")
    return Batch(batch.num_rows, top)


class Array:
    """A column the operator computed, ready to emit: its type and WIT form."""

    __slots__ = ("type", "len", "column")

    def __init__(self, type, length: int, column: wit.Column):
        self.type = type
        self.len = length
        self.column = column


def _validity(values: Sequence) -> Optional[wit.Validity]:
    if all(v is not None for v in values):
        return None
    return wit.Validity(pack_bits(v is not None for v in values), 0)


def _fixed(type, fmt: str, values: Sequence, zero) -> Array:
    data = array(fmt, [zero if v is None else v for v in values])
    return Array(type, len(values), wit.Column(len(values), 0, _validity(values), [data.tobytes()]))


def int64(values: Sequence[Optional[int]]) -> Array:
    """An int64 column from Python ints (`None`: null)."""
    return _fixed(wit.DataType_Int64(), "q", values, 0)


def int32(values: Sequence[Optional[int]]) -> Array:
    return _fixed(wit.DataType_Int32(), "i", values, 0)


def uint64(values: Sequence[Optional[int]]) -> Array:
    return _fixed(wit.DataType_Uint64(), "Q", values, 0)


def float64(values: Sequence[Optional[float]]) -> Array:
    """A float64 column from Python floats (`None`: null)."""
    return _fixed(wit.DataType_Float64(), "d", values, 0.0)


def float32(values: Sequence[Optional[float]]) -> Array:
    """A float32 column; each value rounds to the nearest float32."""
    return _fixed(wit.DataType_Float32(), "f", values, 0.0)


def boolean(values: Sequence[Optional[bool]]) -> Array:
    return Array(wit.DataType_Boolean(), len(values),
                 wit.Column(len(values), 0, _validity(values), [pack_bits(bool(v) for v in values)]))


def _varlen(type, values: Sequence, encode) -> Array:
    offsets = array("i", [0])
    parts = []
    total = 0
    for v in values:
        if v is not None:
            b = encode(v)
            parts.append(b)
            total += len(b)
        offsets.append(total)
    if total > 0x7FFFFFFF:
        raise OverflowError("a string or binary column over 2 GiB in one batch")
    return Array(type, len(values), wit.Column(len(values), 0, _validity(values), [offsets.tobytes(), b"".join(parts)]))


def utf8(values: Sequence[Optional[str]]) -> Array:
    """A utf8 column from Python strings (`None`: null)."""
    return _varlen(wit.DataType_Utf8(), values, lambda s: s.encode("utf-8"))


def binary(values: Sequence[Optional[bytes]]) -> Array:
    return _varlen(wit.DataType_Binary(), values, bytes)
