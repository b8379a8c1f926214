"""PyTorch models as safetensors weights plus the importable path of the model's class.

Loading imports that class (it must be installed: a class defined in ``__main__`` is
refused at save time), checks it is a ``torch.nn.Module``, builds it with the recorded
``init_kwargs`` and loads the weights: no pickle. The weights go through safetensors'
numpy API both ways (``save_weights``/``load_weights``), so that path is the same with or
without torch installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from modelyard.domain.errors import InvalidInput
from modelyard.flavors._base import Saved, class_modules, one_file, require

FILE = "model.safetensors"


def save_weights(arrays: Mapping[str, Any], path: Path) -> None:
    """Write named numpy arrays as a safetensors file."""
    require("safetensors.numpy", "pytorch").save_file(dict(arrays), str(path))


def load_weights(path: Path) -> dict[str, Any]:
    """Read a safetensors file as named numpy arrays (no code runs: it is only tensors)."""
    loaded: dict[str, Any] = require("safetensors.numpy", "pytorch").load_file(str(path))
    return loaded


class PyTorchFlavor:
    name = "pytorch"
    framework = "pytorch"
    format = "safetensors"
    library = "torch"
    requirements = ("torch", "safetensors", "numpy")

    def owns(self, model: Any) -> bool:
        return "torch" in class_modules(model)

    def save(self, model: Any, directory: Path, options: dict[str, Any]) -> Saved:
        cls = type(model)
        if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
            raise InvalidInput(
                f"{cls.__qualname__} must be importable to be loaded again: define it in a"
                " module, not in __main__ or a function"
            )
        weights = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        save_weights(weights, directory / FILE)
        return Saved((FILE,), {**options, "class": f"{cls.__module__}:{cls.__qualname__}"})

    def inspect(self, files: list[Path]) -> dict[str, Any]:
        raise InvalidInput(
            "a PyTorch model's descriptor needs the class path; save it with log_model"
        )

    def load(self, files: list[Path], options: dict[str, Any]) -> Any:
        torch = require("torch", "pytorch")
        cls = _model_class(options.get("class"), torch)
        init_kwargs = options.get("init_kwargs") or {}
        if not isinstance(init_kwargs, dict):
            raise InvalidInput("options.init_kwargs must be a mapping")
        model = cls(**init_kwargs)
        state = {
            k: torch.from_numpy(v) for k, v in load_weights(one_file(files, self.name)).items()
        }
        model.load_state_dict(state)
        model.eval()
        return model

    def predictor(self, model: Any, options: dict[str, Any]) -> Callable[[Any], Any]:
        torch = require("torch", "pytorch")

        def predict(data: Any) -> Any:
            with torch.no_grad():
                return model(torch.as_tensor(data)).numpy()

        return predict


def _model_class(path: Any, torch: Any) -> Any:
    if not isinstance(path, str) or ":" not in path:
        raise InvalidInput("options.class must be 'module:ClassName'")
    module_name, qualname = path.split(":", 1)
    try:
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        raise InvalidInput(
            f"cannot import the model class {path!r}: is its package installed?"
        ) from None
    if not (isinstance(found, type) and issubclass(found, torch.nn.Module)):
        raise InvalidInput(f"{path} is not a torch.nn.Module subclass")
    return found
