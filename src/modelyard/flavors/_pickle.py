"""Pickle, for models no safe format holds: written and read only when the caller says
``unsafe_pickle=True``, since unpickling a file runs whatever code it names."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelyard.flavors._base import Saved, one_file, require

FILE = "model.pkl"


class PickleFlavor:
    name = "pickle"
    framework = "python"
    format = "pickle"
    library = "python"
    requirements: tuple[str, ...] = ()

    def owns(self, model: Any) -> bool:
        return hasattr(model, "predict")

    def save(self, model: Any, directory: Path, options: dict[str, Any]) -> Saved:
        with (directory / FILE).open("wb") as handle:
            pickle.dump(model, handle, protocol=pickle.HIGHEST_PROTOCOL)
        return Saved((FILE,))

    def inspect(self, files: list[Path]) -> dict[str, Any]:
        return {}

    def load(self, files: list[Path], options: dict[str, Any]) -> Any:
        # The caller asked for this: unsafe_pickle=True.
        path = one_file(files, self.name)
        if path.suffix == ".joblib":
            return require("joblib", "sklearn").load(path)
        with path.open("rb") as handle:
            return pickle.load(handle)

    def predictor(self, model: Any, options: dict[str, Any]) -> Callable[[Any], Any]:
        predict: Callable[[Any], Any] = model.predict
        return predict
