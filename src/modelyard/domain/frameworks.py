"""Guessing a version's framework and format from its file names.

A guess only: an explicit ``framework``/``format`` from the caller always wins. Pure, so
the SDK can show the guess before uploading and the server records the same one.
"""

from __future__ import annotations

from collections.abc import Iterable

# (suffix or file name, framework, format), most specific first.
_RULES: tuple[tuple[str, str | None, str], ...] = (
    ("MLmodel", "mlflow", "mlflow"),
    ("saved_model.pb", "tensorflow", "savedmodel"),
    (".onnx", "onnx", "onnx"),
    (".safetensors", None, "safetensors"),
    (".gguf", None, "gguf"),
    (".pt", "pytorch", "torch"),
    (".pth", "pytorch", "torch"),
    (".keras", "keras", "keras"),
    (".h5", "keras", "hdf5"),
    (".joblib", "scikit-learn", "joblib"),
    (".ubj", "xgboost", "ubjson"),
    (".xgb", "xgboost", "xgboost"),
    (".cbm", "catboost", "catboost"),
    (".lgb", "lightgbm", "lightgbm"),
    (".pmml", None, "pmml"),
    (".tflite", "tensorflow", "tflite"),
    (".mlmodel", "coreml", "coreml"),
    (".pkl", None, "pickle"),
    (".pickle", None, "pickle"),
)


def detect_framework(paths: Iterable[str]) -> tuple[str | None, str | None]:
    """Return (framework, format) from the first rule any path matches, else (None, None)."""
    names = list(paths)
    for pattern, framework, fmt in _RULES:
        for path in names:
            base = path.rsplit("/", 1)[-1]
            if base == pattern or (pattern.startswith(".") and base.lower().endswith(pattern)):
                return framework, fmt
    return None, None
