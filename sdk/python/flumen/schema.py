# Arrow types, fields and schemas as the SDK shows them: a tree of `Field`s
# over the WIT's flat pre-order form, with the common types as constants.
from typing import List, Optional, Sequence, Tuple

from wit_world.imports import types as wit

# The Arrow types an operator names most often. Any other type is a
# `wit_world.imports.types.DataType_*` value and works the same way.
NULL = wit.DataType_Null()
BOOL = wit.DataType_Boolean()
INT8 = wit.DataType_Int8()
INT16 = wit.DataType_Int16()
INT32 = wit.DataType_Int32()
INT64 = wit.DataType_Int64()
UINT8 = wit.DataType_Uint8()
UINT16 = wit.DataType_Uint16()
UINT32 = wit.DataType_Uint32()
UINT64 = wit.DataType_Uint64()
FLOAT32 = wit.DataType_Float32()
FLOAT64 = wit.DataType_Float64()
UTF8 = wit.DataType_Utf8()
LARGE_UTF8 = wit.DataType_LargeUtf8()
BINARY = wit.DataType_Binary()
LARGE_BINARY = wit.DataType_LargeBinary()

EXTENSION_NAME = "ARROW:extension:name"
BLOB_EXTENSIONS = ("flumen.blob", "flumen.image", "flumen.video")


def type_name(data_type) -> str:
    """A type's name for messages: `int64`, `utf8`, `fixed-size-binary(32)`."""
    name = type(data_type).__name__.removeprefix("DataType_")
    out = "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")
    value = getattr(data_type, "value", None)
    if isinstance(value, int):
        out += f"({value})"
    return out


class Field:
    """One field of a schema: name, Arrow type, nullability, children, metadata."""

    __slots__ = ("name", "type", "nullable", "children", "metadata")

    def __init__(self, name: str, type, nullable: bool = True, children: Sequence["Field"] = (),
                 metadata: Optional[dict] = None):
        self.name = name
        self.type = type
        self.nullable = nullable
        self.children = list(children)
        self.metadata = dict(metadata or {})

    @property
    def extension(self) -> Optional[str]:
        """The Arrow extension type (`flumen.blob`, …) this field is tagged with, if any."""
        return self.metadata.get(EXTENSION_NAME)

    def is_blob(self) -> bool:
        """Whether the field holds blob references (`flumen.blob`, `.image`, `.video`)."""
        return self.extension in BLOB_EXTENSIONS and isinstance(self.type, wit.DataType_Record)

    def width(self) -> int:
        """How many flat (pre-order) fields this field spans, itself included."""
        return 1 + sum(c.width() for c in self.children)

    def _flatten(self, out: List[wit.Field]) -> None:
        out.append(wit.Field(self.name, self.type, self.nullable, len(self.children), sorted(self.metadata.items())))
        for c in self.children:
            c._flatten(out)

    def __repr__(self) -> str:
        null = "" if self.nullable else " not null"
        return f"{self.name}: {type_name(self.type)}{null}"


class Schema:
    """The top-level fields of a batch, in order."""

    __slots__ = ("fields", "metadata")

    def __init__(self, fields: Sequence[Field], metadata: Optional[dict] = None):
        self.fields = list(fields)
        self.metadata = dict(metadata or {})

    @staticmethod
    def from_wit(schema: wit.Schema) -> "Schema":
        flat = schema.fields
        pos = 0

        def take() -> Field:
            nonlocal pos
            f = flat[pos]
            pos += 1
            children = [take() for _ in range(f.children)]
            return Field(f.name, f.data_type, f.nullable, children, dict(f.metadata))

        top = []
        while pos < len(flat):
            top.append(take())
        return Schema(top, dict(schema.metadata))

    def to_wit(self) -> wit.Schema:
        flat: List[wit.Field] = []
        for f in self.fields:
            f._flatten(flat)
        return wit.Schema(flat, sorted(self.metadata.items()))

    def names(self) -> List[str]:
        return [f.name for f in self.fields]

    def index(self, name: str) -> int:
        """The position of the top-level field `name`; `KeyError` if absent."""
        for i, f in enumerate(self.fields):
            if f.name == name:
                return i
        raise KeyError(name)

    def __len__(self) -> int:
        return len(self.fields)

    def __getitem__(self, i: int) -> Field:
        return self.fields[i]

    def __iter__(self):
        return iter(self.fields)

    def __repr__(self) -> str:
        return "Schema(" + ", ".join(map(repr, self.fields)) + ")"


def flat_ranges(fields: Sequence[Field]) -> List[Tuple[int, int]]:
    """For each top-level field, its [start, end) span in the flat pre-order columns."""
    out = []
    pos = 0
    for f in fields:
        w = f.width()
        out.append((pos, pos + w))
        pos += w
    return out
