"""LightGBM models in LightGBM's own text format.

The text holds a Booster, which predicts probabilities; for a classifier the descriptor
keeps its classes, and predict maps probabilities to classes as LGBMClassifier.predict does
(argmax; for two classes, the second when its probability is above 0.5).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelyard.domain.errors import InvalidInput
from modelyard.flavors._base import Saved, class_modules, one_file, require

FILE = "model.txt"


class LightGBMFlavor:
    name = "lightgbm"
    framework = "lightgbm"
    format = "lightgbm-text"
    library = "lightgbm"
    requirements = ("lightgbm", "numpy", "scipy")

    def owns(self, model: Any) -> bool:
        return "lightgbm" in class_modules(model)

    def save(self, model: Any, directory: Path, options: dict[str, Any]) -> Saved:
        booster = model if type(model).__name__ == "Booster" else model.booster_
        booster.save_model(str(directory / FILE))
        classes = getattr(model, "classes_", None)
        return Saved((FILE,), {"classes": classes.tolist()} if classes is not None else {})

    def inspect(self, files: list[Path]) -> dict[str, Any]:
        return {}

    def load(self, files: list[Path], options: dict[str, Any]) -> Any:
        lgb = require("lightgbm", "lightgbm")
        return lgb.Booster(model_file=str(one_file(files, self.name)))

    def predictor(self, model: Any, options: dict[str, Any]) -> Callable[[Any], Any]:
        import numpy as np

        booster = model if type(model).__name__ == "Booster" else model.booster_
        classes = options.get("classes")
        if classes is None:
            predict: Callable[[Any], Any] = booster.predict
            return predict
        if not isinstance(classes, list) or len(classes) < 2:
            raise InvalidInput("options.classes must list a classifier's classes")
        labels = np.asarray(classes)

        def predict_class(data: Any) -> Any:
            proba = np.asarray(booster.predict(data))
            if proba.ndim == 1:
                return labels[(proba > 0.5).astype(int)]
            return labels[np.argmax(proba, axis=1)]

        return predict_class
