"""XGBoost models in XGBoost's own UBJSON format (a Booster or a scikit-learn-API model)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelyard.domain.errors import InvalidInput
from modelyard.flavors._base import Saved, class_modules, one_file, require

FILE = "model.ubj"
# The classes a descriptor may ask for: a name from a file picks among these, nothing else.
CLASSES = (
    "Booster",
    "XGBClassifier",
    "XGBRegressor",
    "XGBRanker",
    "XGBRFClassifier",
    "XGBRFRegressor",
)


class XGBoostFlavor:
    name = "xgboost"
    framework = "xgboost"
    format = "ubjson"
    library = "xgboost"
    # Installed as xgboost or as the smaller CPU-only wheel, xgboost-cpu.
    requirements = ("xgboost", "xgboost-cpu", "numpy", "scipy")

    def owns(self, model: Any) -> bool:
        return "xgboost" in class_modules(model)

    def save(self, model: Any, directory: Path, options: dict[str, Any]) -> Saved:
        kind = type(model).__name__
        if kind not in CLASSES:
            raise InvalidInput(f"an XGBoost model must be one of {', '.join(CLASSES)}, not {kind}")
        model.save_model(str(directory / FILE))
        return Saved((FILE,), {"class": kind})

    def inspect(self, files: list[Path]) -> dict[str, Any]:
        return {"class": "Booster"}

    def load(self, files: list[Path], options: dict[str, Any]) -> Any:
        xgb = require("xgboost", "xgboost")
        kind = options.get("class", "Booster")
        if kind not in CLASSES:
            raise InvalidInput(f"options.class must be one of {', '.join(CLASSES)}, not {kind!r}")
        model = getattr(xgb, kind)()
        model.load_model(str(one_file(files, self.name)))
        return model

    def predictor(self, model: Any, options: dict[str, Any]) -> Callable[[Any], Any]:
        if type(model).__name__ != "Booster":
            predict: Callable[[Any], Any] = model.predict
            return predict
        xgb = require("xgboost", "xgboost")
        return lambda data: model.predict(xgb.DMatrix(data))
