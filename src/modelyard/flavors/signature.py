"""A model's signature: what its inputs and outputs look like, inferred from an example.

Two shapes of input exist. *Columns* (a DataFrame, a dict of columns, a list of records):
each column has a name and a dtype. A *tensor* (a numpy array): one dtype and a shape whose
first dimension, the batch, is -1. ``Signature.prepare`` turns whatever a caller passes into
the form the model was given at training time, or raises ``InvalidInput`` naming the column
and the expected and actual dtypes. Only safe casts happen (int -> float, never the reverse).

numpy is imported when a signature is used, pandas only when a DataFrame is involved.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from modelyard.domain.errors import InvalidInput

if TYPE_CHECKING:
    import numpy as np

# What the model was handed in the example, and so what predict hands it.
InputForm = Literal["dataframe", "ndarray", "columns", "records"]
_FORMS: tuple[str, ...] = ("dataframe", "ndarray", "columns", "records")
STRING = "str"
# The marker of an example file written by save_model (a bare JSON list or object is read
# as records or columns, as `modelyard describe --input-example` accepts them).
EXAMPLE_KEY = "modelyard.example"


@dataclass(frozen=True, slots=True)
class Spec:
    """One input or output: a named column (``shape`` None) or a tensor."""

    name: str
    dtype: str
    shape: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "dtype": self.dtype}
        if self.shape is not None:
            data["shape"] = list(self.shape)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Spec:
        if not isinstance(data, Mapping):
            raise InvalidInput(f"a signature entry must be a mapping, not {data!r}")
        name, dtype, shape = data.get("name"), data.get("dtype"), data.get("shape")
        if not isinstance(name, str) or not isinstance(dtype, str):
            raise InvalidInput(f"a signature entry needs a text name and dtype: {dict(data)!r}")
        if shape is not None and not (
            isinstance(shape, list) and all(isinstance(n, int) for n in shape)
        ):
            raise InvalidInput(f"signature entry {name!r}: shape must be a list of integers")
        return cls(name, dtype, tuple(shape) if shape is not None else None)


@dataclass(frozen=True, slots=True)
class Signature:
    """Inputs (columns, or one tensor), outputs, and the form the model takes its input in."""

    inputs: tuple[Spec, ...]
    outputs: tuple[Spec, ...]
    # What predict hands the model: the example's own form, except that columns for a
    # model fitted on named columns go as a DataFrame; records and dicts, as a 2-D array.
    input_form: InputForm

    @property
    def is_tensor(self) -> bool:
        return self.input_form == "ndarray"

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_form": self.input_form,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        if not isinstance(data, Mapping):
            raise InvalidInput("a signature must be a mapping of inputs, outputs, input_form")
        form = data.get("input_form")
        if form not in _FORMS:
            raise InvalidInput(f"signature input_form must be one of {', '.join(_FORMS)}")
        inputs = data.get("inputs") or []
        outputs = data.get("outputs") or []
        if not isinstance(inputs, list) or not isinstance(outputs, list) or not inputs:
            raise InvalidInput("a signature needs a non-empty list of inputs")
        return cls(
            tuple(Spec.from_dict(s) for s in inputs),
            tuple(Spec.from_dict(s) for s in outputs),
            form,
        )

    def prepare(self, data: Any) -> Any:
        """``data`` checked against the inputs and in the model's form; InvalidInput if not."""
        if self.is_tensor:
            return _prepare_tensor(self.inputs[0], data)
        columns = _prepare_columns(self.inputs, data)
        if self.input_form == "dataframe":
            import pandas as pd

            return pd.DataFrame(columns)
        import numpy as np

        arrays = list(columns.values())
        if all(a.dtype.kind in "biuf" for a in arrays):
            return np.column_stack(arrays)  # numpy's common numeric type
        table = np.empty((len(arrays[0]), len(arrays)), dtype=object)  # text and numbers
        for i, array in enumerate(arrays):
            table[:, i] = array
        return table


def infer_signature(example: Any, output: Any = None) -> Signature:
    """The signature of an input example (and of the model's output on it, if given)."""
    form = input_form(example)
    inputs = (
        (_tensor_spec("input", _as_array(example)),)
        if form == "ndarray"
        else tuple(Spec(n, dtype_name(c)) for n, c in _columns_of(example, form).items())
    )
    return Signature(inputs, _output_specs(output) if output is not None else (), form)


def input_form(data: Any) -> InputForm:
    """Which of the accepted kinds of input ``data`` is."""
    if _is_dataframe(data):
        return "dataframe"
    if type(data).__module__ == "numpy" and type(data).__name__ == "ndarray":
        return "ndarray"
    if isinstance(data, Mapping):
        return "columns"
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        if data and all(isinstance(r, Mapping) for r in data):
            return "records"
        return "ndarray"
    raise InvalidInput(
        f"input must be a pandas DataFrame, a numpy array, a dict of columns or a list of"
        f" records, not {type(data).__name__}"
    )


def dtype_name(values: np.ndarray[Any, Any]) -> str:
    """A column's dtype as the signature names it: numpy's name, or 'str' for text."""
    kind = values.dtype.kind
    if kind in "US" or (kind == "O" and len(values) and all(isinstance(v, str) for v in values)):
        return STRING
    return str(values.dtype.name)


def _is_dataframe(data: Any) -> bool:
    return any(
        c.__module__.startswith("pandas") and c.__name__ == "DataFrame" for c in type(data).__mro__
    )


def _as_array(data: Any) -> np.ndarray[Any, Any]:
    import numpy as np

    if _is_dataframe(data):
        return np.asarray(data.to_numpy())
    try:
        return np.asarray(data)
    except ValueError as exc:  # ragged lists
        raise InvalidInput(f"input is not a rectangular array: {exc}") from None


def _tensor_spec(name: str, array: np.ndarray[Any, Any]) -> Spec:
    dtype = STRING if array.dtype.kind in "US" else array.dtype.name
    return Spec(name, dtype, (-1, *array.shape[1:]) if array.ndim else ())


def _output_specs(output: Any) -> tuple[Spec, ...]:
    if _is_dataframe(output):
        return tuple(
            Spec(str(n), dtype_name(c)) for n, c in _columns_of(output, "dataframe").items()
        )
    return (_tensor_spec("output", _as_array(output)),)


def _columns_of(data: Any, form: InputForm) -> dict[str, np.ndarray[Any, Any]]:
    """Columnar input as name -> 1-D array, in its own order."""
    import numpy as np

    if form == "dataframe":
        return {str(name): np.asarray(data[name].to_numpy()) for name in data.columns}
    if form == "columns":
        columns = {}
        for name, values in data.items():
            column = _as_array(values)
            if column.ndim != 1:
                raise InvalidInput(f"column {name!r} must be a flat list of values")
            columns[str(name)] = column
        if len({len(c) for c in columns.values()}) > 1:
            raise InvalidInput("the columns have different lengths")
        return columns
    names: dict[str, None] = {}
    for record in data:
        names.update(dict.fromkeys(str(k) for k in record))
    columns = {}
    for name in names:
        for i, record in enumerate(data):
            if name not in record:
                raise InvalidInput(f"record {i} has no column {name!r}")
        columns[name] = _as_array([record[name] for record in data])
    return columns


def _prepare_columns(specs: tuple[Spec, ...], data: Any) -> dict[str, np.ndarray[Any, Any]]:
    form = input_form(data)
    if form == "ndarray":
        array = _as_array(data)
        if array.ndim != 2 or array.shape[1] != len(specs):
            raise InvalidInput(
                f"an array for this model must have {len(specs)} columns"
                f" ({', '.join(s.name for s in specs)}), not shape {list(array.shape)}"
            )
        given = {s.name: array[:, i] for i, s in enumerate(specs)}
    else:
        given = _columns_of(data, form)
    expected = {s.name: s for s in specs}
    missing = [name for name in expected if name not in given]
    if missing:
        listed = ", ".join(f"{n!r} ({expected[n].dtype})" for n in missing)
        raise InvalidInput(f"missing column{'s' if len(missing) > 1 else ''} {listed}")
    extra = [name for name in given if name not in expected]
    if extra:
        raise InvalidInput(
            f"unexpected column{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))};"
            f" the model takes {', '.join(expected)}"
        )
    return {s.name: _cast(given[s.name], s, f"column {s.name!r}") for s in specs}


def _prepare_tensor(spec: Spec, data: Any) -> np.ndarray[Any, Any]:
    array = _as_array(data)
    shape = spec.shape or ()
    if array.ndim != len(shape) or any(
        want not in (-1, got) for want, got in zip(shape, array.shape, strict=False)
    ):
        raise InvalidInput(
            f"input must have shape {list(shape)} (-1: any), not {list(array.shape)}"
        )
    return _cast(array, spec, "input")


def _cast(values: np.ndarray[Any, Any], spec: Spec, what: str) -> np.ndarray[Any, Any]:
    """``values`` as ``spec.dtype`` when numpy calls the cast safe; else InvalidInput."""
    import numpy as np

    actual = dtype_name(values) if values.ndim == 1 else _tensor_spec("", values).dtype
    if spec.dtype == STRING:
        if actual != STRING:
            raise InvalidInput(f"{what}: expected str, got {actual}")
        return values
    if actual == STRING or not np.can_cast(values.dtype, np.dtype(spec.dtype), casting="safe"):
        raise InvalidInput(
            f"{what}: expected {spec.dtype}, got {actual}"
            " (only safe casts such as int to float are made)"
        )
    return values.astype(spec.dtype, copy=False)


# -- the input example as a file -------------------------------------------------------------


def example_to_json(example: Any) -> str:
    """The example as JSON text that ``example_from_json`` reads back in the same form."""
    form = input_form(example)
    if form == "ndarray":
        array = _as_array(example)
        body: dict[str, Any] = {"dtype": _tensor_spec("", array).dtype, "data": array.tolist()}
    else:
        columns = _columns_of(example, form)
        body = {
            "dtypes": {n: dtype_name(c) for n, c in columns.items()},
            "data": {n: c.tolist() for n, c in columns.items()},
        }
    return json.dumps({EXAMPLE_KEY: form, **body}, indent=1, default=str)


def example_from_json(text: str) -> Any:
    """An example file back as the object it was: also a bare list (of records or rows)
    or a dict of columns, as written by hand."""
    import numpy as np

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"the input example is not JSON: {exc}") from None
    if not isinstance(data, dict) or EXAMPLE_KEY not in data:
        input_form(data)  # refuses what is not an input
        return data
    form = data[EXAMPLE_KEY]
    if form == "ndarray":
        dtype = data.get("dtype")
        return np.asarray(data.get("data"), dtype=None if dtype == STRING else dtype)
    columns = data.get("data")
    dtypes = data.get("dtypes") or {}
    if form not in _FORMS or not isinstance(columns, dict) or not isinstance(dtypes, dict):
        raise InvalidInput(f"the input example's {EXAMPLE_KEY} form is not one of {_FORMS}")
    arrays = {
        n: np.asarray(v, dtype=None if dtypes.get(n) in (None, STRING) else dtypes[n])
        for n, v in columns.items()
    }
    if form == "dataframe":
        import pandas as pd

        return pd.DataFrame(arrays)
    if form == "columns":
        return {n: a.tolist() for n, a in arrays.items()}
    size = len(next(iter(arrays.values()))) if arrays else 0
    return [{n: a[i].item() for n, a in arrays.items()} for i in range(size)]
