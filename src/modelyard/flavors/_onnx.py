"""ONNX models, run by onnxruntime on the CPU.

``.model`` is the onnxruntime session. An input is cast to the element type the graph
declares (a float64 array to a float32 input) when numpy calls it the same kind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelyard.domain.errors import InvalidInput
from modelyard.flavors._base import Saved, class_modules, one_file, require

FILE = "model.onnx"
_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}


class OnnxFlavor:
    name = "onnx"
    framework = "onnx"
    format = "onnx"
    library = "onnxruntime"
    requirements = ("onnxruntime", "onnx", "numpy")

    def owns(self, model: Any) -> bool:
        return "onnx" in class_modules(model) and type(model).__name__ == "ModelProto"

    def save(self, model: Any, directory: Path, options: dict[str, Any]) -> Saved:
        (directory / FILE).write_bytes(model.SerializeToString())
        return Saved((FILE,))

    def inspect(self, files: list[Path]) -> dict[str, Any]:
        return {}

    def load(self, files: list[Path], options: dict[str, Any]) -> Any:
        ort = require("onnxruntime", "onnx")
        path = one_file(files, self.name)
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def predictor(self, model: Any, options: dict[str, Any]) -> Callable[[Any], Any]:
        import numpy as np

        session = model
        if type(model).__name__ == "ModelProto":  # at save time: run the proto itself
            ort = require("onnxruntime", "onnx")
            session = ort.InferenceSession(
                model.SerializeToString(), providers=["CPUExecutionProvider"]
            )
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise InvalidInput(f"an ONNX model must take one input tensor, not {len(inputs)}")
        name, dtype = inputs[0].name, _TYPES.get(inputs[0].type)

        def run(data: Any) -> Any:
            array = np.asarray(data)
            if dtype is not None and array.dtype != dtype:
                if not np.can_cast(array.dtype, dtype, casting="same_kind"):
                    raise InvalidInput(f"input: the ONNX graph takes {dtype}, not {array.dtype}")
                array = array.astype(dtype)
            return session.run(None, {name: array})[0]

        return run
