"""Flavors: a model object saved in a safe format with a descriptor, and loaded back.

>>> from modelyard.flavors import save_model, load_directory
>>> save_model(clf, "out/", input_example=X[:5])      # model.skops + modelyard.yaml
>>> load_directory("out/").predict(X[:5])

Each framework (scikit-learn through skops, XGBoost, LightGBM, ONNX, PyTorch weights) is
imported only when a model of it is saved or loaded.
"""

from modelyard.flavors.core import (
    FLAVORS,
    Predictor,
    describe_directory,
    load_directory,
    save_model,
)
from modelyard.flavors.descriptor import DESCRIPTOR_FILE, Descriptor, read_descriptor
from modelyard.flavors.signature import Signature, Spec, infer_signature

__all__ = [
    "DESCRIPTOR_FILE",
    "FLAVORS",
    "Descriptor",
    "Predictor",
    "Signature",
    "Spec",
    "describe_directory",
    "infer_signature",
    "load_directory",
    "read_descriptor",
    "save_model",
]
