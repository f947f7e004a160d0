# The operator contract in Python: subclass `Operator`, describe what it reads,
# carries and computes in `open`, and `export` it; the SDK does the WIT glue.
import json
from types import SimpleNamespace
from typing import Dict, Iterable, List, Optional, Sequence, Union

from componentize_py_types import Err
from wit_world.imports import output as wit_output
from wit_world.imports import types as wit
from wit_world.exports import transform as wit_transform

from .columns import Array, Batch, pack_bits, read_batch
from .schema import Field, Schema, type_name


class FlumenError(Exception):
    """An error the operator reports on purpose; its kind steers the failure policy."""

    kind = wit.ErrorKind.INTERNAL


class ConfigError(FlumenError):
    """The operator's configuration (or its input schema) is unusable: the job fails at `open`."""

    kind = wit.ErrorKind.INVALID_CONFIG


class InputError(FlumenError):
    """This input cannot be processed."""

    kind = wit.ErrorKind.INVALID_INPUT


class LimitError(FlumenError):
    kind = wit.ErrorKind.LIMIT


_MISSING = object()


class Context:
    """What an instance learns at `open`: its id, parallelism, config and input schemas."""

    def __init__(self, name: str, ctx: wit_transform.Context):
        self._name = name
        self.operator_id = ctx.operator_id
        self.subtask = ctx.subtask
        self.parallelism = ctx.parallelism
        self.inputs: List[Schema] = [Schema.from_wit(s) for s in ctx.inputs]
        try:
            raw = json.loads(ctx.config) if ctx.config.strip() else {}
        except ValueError as e:
            raise ConfigError(f"{name}: config is not JSON: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{name}: config must be a table")
        self.raw_config: dict = raw

    def input(self, port: int = 0) -> Schema:
        if port >= len(self.inputs):
            raise ConfigError(f"{self._name}: needs input port {port}, has {len(self.inputs)} input(s)")
        return self.inputs[port]

    def config(self, **spec) -> SimpleNamespace:
        """The config table, checked: `key=type` is required, `key=(default, type)` optional.

        Unknown keys, missing required keys and values of the wrong type raise
        `ConfigError` naming the key. `int` refuses booleans; `float` takes ints.
        """
        for key in self.raw_config:
            if key not in spec:
                raise ConfigError(f"{self._name}: unknown config key `{key}` (known: {', '.join(sorted(spec)) or 'none'})")
        out = {}
        for key, want in spec.items():
            default, kind = want if isinstance(want, tuple) else (_MISSING, want)
            value = self.raw_config.get(key, _MISSING)
            if value is _MISSING:
                if default is _MISSING:
                    raise ConfigError(f"{self._name}: config needs `{key}`")
                out[key] = default
                continue
            ok = (isinstance(value, kind) and not (kind is int and isinstance(value, bool))) or (
                kind is float and isinstance(value, int) and not isinstance(value, bool))
            if not ok:
                raise ConfigError(f"{self._name}: config `{key}` must be {kind.__name__}, not {json.dumps(value)}")
            out[key] = float(value) if kind is float else value
        return SimpleNamespace(**out)

    def column(self, name: str, *types, port: int = 0) -> int:
        """The position of input column `name`, checked to be one of `types` (any type when none)."""
        schema = self.input(port)
        try:
            i = schema.index(name)
        except KeyError:
            raise ConfigError(f"{self._name}: the input has no column `{name}` (it has {schema.names()})") from None
        if types and not any(isinstance(schema[i].type, type(t)) for t in types):
            want = " or ".join(type_name(t) for t in types)
            raise ConfigError(f"{self._name}: column `{name}` is {type_name(schema[i].type)}, expected {want}")
        return i

    def plan(self, *, reads: Union[None, Sequence, Dict[int, Optional[Sequence]]] = None,
             carry: Union[bool, Sequence] = (), add: Sequence[Field] = ()) -> "Plan":
        """What the operator reads, carries and computes, in one line.

        - `reads`: the input columns (names or positions of port 0, or a dict
          port → columns) that `process` receives; `None`: all of them.
        - `carry`: input columns (port 0) the output keeps unchanged, in output
          order; `True`: all of them. The host builds these from the input's own
          buffers: they never enter the operator.
        - `add`: the fields the operator computes, after the carried ones.
        """
        inputs = self.inputs
        first = inputs[0] if inputs else Schema([])

        def resolve(cols, schema: Schema) -> List[int]:
            out = []
            for c in cols:
                if isinstance(c, str):
                    try:
                        c = schema.index(c)
                    except KeyError:
                        raise ConfigError(f"{self._name}: the input has no column `{c}`") from None
                if not 0 <= c < len(schema):
                    raise ConfigError(f"{self._name}: input column {c} is out of range")
                out.append(c)
            return out

        carried = list(range(len(first))) if carry is True else resolve(carry or (), first)
        if reads is None:
            read_lists: List[Optional[List[int]]] = []
        elif isinstance(reads, dict):
            read_lists = [None if reads.get(p, None) is None else sorted(set(resolve(reads[p], inputs[p])))
                          for p in range(len(inputs))]
        else:
            read_lists = [sorted(set(resolve(reads, first)))] + [None] * (len(inputs) - 1)
        fields = [first[c] for c in carried] + list(add)
        return Plan(Schema(fields), [*carried] if carried else [], len(add), read_lists, inputs)


class Plan:
    """The answer to `open`: output schema, carried columns, columns read per port."""

    def __init__(self, schema: Schema, carried: List[int], computed: int,
                 reads: List[Optional[List[int]]], inputs: List[Schema]):
        self.schema = schema
        self.carried = carried
        self.computed = computed
        self.reads = reads
        self.computed_fields = schema.fields[len(carried):]
        # The fields of the columns `process` receives, per port.
        self.read_fields = [[inputs[p][i] for i in (reads[p] if p < len(reads) and reads[p] is not None
                                                     else range(len(inputs[p])))]
                            for p in range(len(inputs))]

    def to_wit(self) -> wit_transform.OperatorPlan:
        carried = [*self.carried, *([None] * self.computed)] if self.carried else []
        return wit_transform.OperatorPlan(self.schema.to_wit(), carried, self.reads)


class Output:
    """Where an operator sends its rows: computed columns plus, when it carries
    input columns, which input rows they take."""

    def __init__(self, plan: Plan, input_rows: Optional[int]):
        self._plan = plan
        self._input_rows = input_rows

    def _send(self, arrays: Sequence[Array], rows: int, selection) -> None:
        want = self._plan.computed
        if len(arrays) != want:
            names = [f.name for f in self._plan.computed_fields]
            raise ValueError(f"emit got {len(arrays)} computed column(s), the plan computes {want}: {names}")
        for a in arrays:
            if a.len != rows:
                raise ValueError(f"emit: a computed column has {a.len} rows, the batch {rows}")
        columns: List[wit.Column] = []
        for a in arrays:
            columns.append(a.column)
        wit_output.emit(wit.Batch(rows, columns), selection)

    def emit(self, *arrays: Array) -> None:
        """Emits computed columns; carried columns take every input row, in order."""
        if self._plan.carried:
            if self._input_rows is None:
                raise ValueError("carried columns exist only while `process` runs")
            self._send(arrays, self._input_rows, wit.Selection_All())
        else:
            rows = arrays[0].len if arrays else 0
            self._send(arrays, rows, wit.Selection_All())

    def keep(self, mask: Sequence, *arrays: Array) -> None:
        """Keeps the input rows where `mask` is true (computed columns hold only those rows)."""
        if self._input_rows is None:
            raise ValueError("keep() selects input rows: call it from `process`")
        if len(mask) != self._input_rows:
            raise ValueError(f"keep: the mask has {len(mask)} entries, the input {self._input_rows} rows")
        rows = sum(1 for m in mask if m)
        self._send(arrays, rows, wit.Selection_Mask(pack_bits(mask)))

    def take(self, indices: Sequence[int], *arrays: Array) -> None:
        """Takes input rows by index (any order, repeats allowed)."""
        if self._input_rows is None:
            raise ValueError("take() selects input rows: call it from `process`")
        self._send(arrays, len(indices), wit.Selection_Indices(list(indices)))


class Operator:
    """Subclass and override `open` and `process`; the rest is optional.

    `name` (default: the class name in lowercase) starts the SDK's own
    error messages.
    """

    name: Optional[str] = None

    def open(self, ctx: Context) -> Plan:
        raise NotImplementedError("an operator must define open(self, ctx) and return ctx.plan(...)")

    def process(self, port: int, batch: Batch, out: Output) -> None:
        raise NotImplementedError("an operator must define process(self, port, batch, out)")

    def finish(self, out: Output) -> None:
        """All inputs ended: emit what is left (only computed columns)."""

    def on_watermark(self, watermark: int, out: Output) -> None:
        """Event time reached `watermark` (ms) on every input."""

    def save(self) -> bytes:
        """Instance memory to keep at a checkpoint (default: nothing)."""
        return b""

    def restore(self, data: bytes) -> None:
        """Given back after a restart: what `save` returned."""
        if data:
            raise FlumenError(f"{type(self).__name__} saved {len(data)} bytes but defines no restore()")


def _fail(e: BaseException) -> Err:
    """An exception → the WIT error the host's failure policy acts on."""
    if isinstance(e, Err):
        return e
    if isinstance(e, FlumenError):
        return Err(wit.Error(e.kind, str(e)))
    # The innermost frame, read from the traceback itself: `traceback`'s
    # helpers look source lines up in files, and there are none at run time.
    where = ""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        code = tb.tb_frame.f_code
        where = f" ({code.co_filename.rsplit('/', 1)[-1]} line {tb.tb_lineno}, in {code.co_name})"
    return Err(wit.Error(wit.ErrorKind.INTERNAL, f"{type(e).__name__}: {e}{where}"))


def export(cls) -> tuple:
    """The classes componentize-py looks for, wired to an instance of `cls`:

        Transform, Snapshot, EventTime = flumen.export(MyOperator)
    """
    name = cls.name or cls.__name__.lower()
    box: Dict[str, object] = {}

    def op() -> Operator:
        try:
            return box["op"]
        except KeyError:
            raise Err(wit.Error(wit.ErrorKind.INTERNAL, f"{name}: called before open")) from None

    class Transform:
        def open(self, ctx: wit_transform.Context) -> wit_transform.OperatorPlan:
            try:
                instance = cls()
                plan = instance.open(Context(name, ctx))
                if not isinstance(plan, Plan):
                    raise TypeError(f"{cls.__name__}.open must return ctx.plan(...), not {type(plan).__name__}")
                box["op"], box["plan"] = instance, plan
                return plan.to_wit()
            except BaseException as e:
                raise _fail(e) from None

        def process(self, port: int, input: wit.Batch) -> None:
            instance = op()
            plan: Plan = box["plan"]  # type: ignore[assignment]
            try:
                batch = read_batch(plan.read_fields[port], input)
                instance.process(port, batch, Output(plan, input.num_rows))
            except BaseException as e:
                raise _fail(e) from None

        def finish(self) -> None:
            instance = op()
            try:
                instance.finish(Output(box["plan"], None))  # type: ignore[arg-type]
            except BaseException as e:
                raise _fail(e) from None

    class Snapshot:
        def save(self) -> bytes:
            try:
                return bytes(op().save())
            except BaseException as e:
                raise _fail(e) from None

        def restore(self, data: bytes) -> None:
            try:
                op().restore(data)
            except BaseException as e:
                raise _fail(e) from None

    class EventTime:
        def on_watermark(self, watermark: int) -> None:
            instance = op()
            try:
                instance.on_watermark(watermark, Output(box["plan"], None))  # type: ignore[arg-type]
            except BaseException as e:
                raise _fail(e) from None

    return Transform, Snapshot, EventTime
