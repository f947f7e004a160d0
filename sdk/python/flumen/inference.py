# Models the host runs (the `inference` capability): load a model by name and
# run it on float32 tensors; calls from every instance share one dynamic batcher.
from array import array

from componentize_py_types import Err
from typing import List, Optional, Sequence


# Imported when the component is made (componentize-py snapshots the
# interpreter after importing app.py): there is no file system at run time to
# import from. None when the plugin does not list `inference`.
try:
    from wit_world.imports import inference as _IFACE
except ImportError:
    _IFACE = None


def _wit():
    if _IFACE is None:
        raise RuntimeError("this operator does not import `inference`: add \"inference\" to `capabilities` in its plugin.toml")
    return _IFACE


class InferenceError(Exception):
    """A model call failed: unknown model, mismatch, deadline, refused, backend."""


def _describe(e) -> str:
    v = getattr(e, "value", e)
    inner = getattr(v, "value", v)
    return f"{type(v).__name__.removeprefix('InferError_')}: {inner}"


class Tensor:
    """A float32 tensor: `shape` (rows first) and `values`, a memoryview of float32."""

    __slots__ = ("shape", "values")

    def __init__(self, shape: Sequence[int], values):
        self.shape = list(shape)
        self.values = values

    def row(self, i: int):
        width = 1
        for d in self.shape[1:]:
            width *= d
        return self.values[i * width:(i + 1) * width]


def f32(rows: int, values: Sequence[float]):
    """A float32 `[rows, len(values) / rows]` input tensor (values rounded to float32)."""
    data = array("f", values)
    if rows and len(data) % rows:
        raise ValueError(f"{len(data)} values do not split into {rows} rows")
    wit = _wit()
    return wit.Tensor(wit.TensorType.FLOAT32, [rows, len(data) // rows if rows else 0], data.tobytes())


class Model:
    def __init__(self, handle):
        self._m = handle
        self.info = handle.info()

    def infer(self, inputs: list, deadline_ms: Optional[int] = None) -> List[Tensor]:
        """Runs the model: one tensor per input (see `f32`); float32 outputs as `Tensor`s."""
        try:
            outs = self._m.infer(inputs, deadline_ms)
        except Err as e:
            raise InferenceError(f"model `{self.info.name}`: {_describe(e)}") from None
        result = []
        for t in outs:
            if t.dtype != _wit().TensorType.FLOAT32:
                raise InferenceError(f"model `{self.info.name}`: output is {t.dtype.name.lower()}; use the raw tensor")
            result.append(Tensor(t.shape, memoryview(t.data).cast("f")))
        return result


def load(name: str) -> Model:
    """The model `name` of the job's model repository."""
    try:
        return Model(_wit().load(name))
    except Err as e:
        raise InferenceError(f"model `{name}`: {_describe(e)}") from None
