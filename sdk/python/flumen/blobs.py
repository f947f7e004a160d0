# Large objects by reference (the `blobs` capability): read, stat, create and
# keep blobs whose references arrive in `flumen.blob` columns.
from typing import Optional

CHUNK = 64 * 1024


# Imported when the component is made (componentize-py snapshots the
# interpreter after importing app.py): there is no file system at run time to
# import from. None when the plugin does not list `blobs`.
try:
    from wit_world.imports import blobs as _IFACE
except ImportError:
    _IFACE = None


def _wit():
    if _IFACE is None:
        raise RuntimeError("this operator does not import `blobs`: add \"blobs\" to `capabilities` in its plugin.toml")
    return _IFACE


class BlobRef:
    """A reference to a blob: digest (32 bytes), size, media type and the host's token."""

    __slots__ = ("digest", "size", "media_type", "token")

    def __init__(self, digest: bytes, size: int, media_type: str, token: bytes):
        self.digest = digest
        self.size = size
        self.media_type = media_type
        self.token = token

    def _wit(self):
        return _wit().BlobRef(self.digest, self.size, self.media_type, self.token)

    def __repr__(self) -> str:
        return f"BlobRef({self.digest[:8].hex()}…, {self.size} bytes, {self.media_type})"


def read(ref: BlobRef, offset: int = 0, length: int = CHUNK) -> bytes:
    """Bytes [offset, offset + length) of the blob, cut at its end."""
    return _wit().read(ref._wit(), offset, length)


def chunks(ref: BlobRef, size: int = CHUNK):
    """The blob's bytes, `size` at a time, from the start until a read returns nothing."""
    wit = _wit()
    r = ref._wit()
    offset = 0
    while True:
        data = wit.read(r, offset, size)
        if not data:
            return
        offset += len(data)
        yield data


def read_all(ref: BlobRef) -> bytes:
    return b"".join(chunks(ref))


def stat(ref: BlobRef):
    """Size, media type and source of a blob, without reading it."""
    return _wit().stat(ref._wit())


def create(data: bytes, media_type: str = "application/octet-stream") -> BlobRef:
    r = _wit().create(data, media_type)
    return BlobRef(r.digest, r.size, r.media_type, r.token)


def retain(ref: BlobRef) -> None:
    """Keeps a blob alive past the current call (until `release`)."""
    _wit().retain(ref._wit())


def release(ref: BlobRef) -> None:
    _wit().release(ref._wit())
