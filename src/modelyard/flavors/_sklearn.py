"""scikit-learn estimators and pipelines, through skops (no pickle).

skops refuses to build a type it does not trust by default. At save time the types it
would need trusted are listed in the descriptor; at load time a type is trusted only if the
file needs it, the descriptor lists it AND it comes from scikit-learn, numpy or scipy:
never everything the file asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelyard.domain.errors import InvalidInput
from modelyard.flavors._base import Saved, class_modules, one_file, require

FILE = "model.skops"
STANDARD_MODULES = ("sklearn", "numpy", "scipy")


class NotSafe(InvalidInput):
    """A model no safe format can hold; ``unsafe_pickle=True`` would pickle it."""

    default_code = "unsafe_model"


def standard(type_name: str) -> bool:
    return type_name.split(".", 1)[0] in STANDARD_MODULES


class SklearnFlavor:
    name = "sklearn"
    framework = "scikit-learn"
    format = "skops"
    library = "scikit-learn"
    requirements = ("scikit-learn", "skops", "numpy", "scipy")

    def owns(self, model: Any) -> bool:
        return "sklearn" in class_modules(model)

    def save(self, model: Any, directory: Path, options: dict[str, Any]) -> Saved:
        sio = require("skops.io", "sklearn")
        target = directory / FILE
        sio.dump(model, target)
        try:
            return Saved((FILE,), self.inspect([target]))
        except NotSafe:
            target.unlink()
            raise

    def inspect(self, files: list[Path]) -> dict[str, Any]:
        """The types skops needs trusted to read the file; NotSafe if any is foreign."""
        sio = require("skops.io", "sklearn")
        needed = sorted(sio.get_untrusted_types(file=one_file(files, self.name)))
        foreign = [t for t in needed if not standard(t)]
        if foreign:
            raise NotSafe(
                f"skops cannot read this model without trusting {', '.join(foreign)}, which"
                " are not scikit-learn, numpy or scipy types; pass unsafe_pickle=True to"
                " pickle it instead"
            )
        return {"trusted_types": needed}

    def load(self, files: list[Path], options: dict[str, Any]) -> Any:
        sio = require("skops.io", "sklearn")
        path = one_file(files, self.name)
        declared = options.get("trusted_types") or []
        if not isinstance(declared, list):
            raise InvalidInput("options.trusted_types must be a list of type names")
        needed = sorted(sio.get_untrusted_types(file=path))
        refused = [t for t in needed if t not in declared or not standard(t)]
        if refused:
            raise InvalidInput(
                f"{path.name} needs types that are not trusted: {', '.join(refused)}"
                " (a type is trusted only if the descriptor lists it and it comes from"
                " scikit-learn, numpy or scipy)"
            )
        return sio.load(path, trusted=needed)

    def predictor(self, model: Any, options: dict[str, Any]) -> Callable[[Any], Any]:
        predict: Callable[[Any], Any] = model.predict
        return predict
