"""save_model and load_directory: a model object to a directory with a descriptor, and back.

``save_model`` picks the flavor from the model's class, writes the model in that flavor's
safe format, runs the model on the input example to learn its outputs, and writes
``modelyard.yaml``. ``load_directory`` reads the descriptor (every path checked), verifies
the files against the version's manifest when given one, refuses a pickle unless asked,
and returns a ``Predictor`` that validates its input against the signature.
"""

from __future__ import annotations

import platform
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.domain.errors import DigestMismatch, InvalidInput
from modelyard.flavors._base import Flavor, installed_version
from modelyard.flavors._lightgbm import LightGBMFlavor
from modelyard.flavors._onnx import OnnxFlavor
from modelyard.flavors._pickle import PickleFlavor
from modelyard.flavors._pytorch import PyTorchFlavor
from modelyard.flavors._sklearn import NotSafe, SklearnFlavor
from modelyard.flavors._xgboost import XGBoostFlavor
from modelyard.flavors.descriptor import DESCRIPTOR_FILE, Descriptor, read_descriptor
from modelyard.flavors.signature import (
    Signature,
    example_from_json,
    example_to_json,
    infer_signature,
)

if TYPE_CHECKING:
    from modelyard.domain.models import Version

EXAMPLE_FILE = "input_example.json"
# Most specific first: an XGBoost or LightGBM sklearn-API model is also a sklearn estimator.
SAFE_FLAVORS: tuple[Flavor, ...] = (
    XGBoostFlavor(),
    LightGBMFlavor(),
    OnnxFlavor(),
    PyTorchFlavor(),
    SklearnFlavor(),
)
PICKLE = PickleFlavor()
FLAVORS: dict[str, Flavor] = {f.name: f for f in (*SAFE_FLAVORS, PICKLE)}


class Predictor:
    """A loaded model: ``predict`` validates its input against the signature first."""

    def __init__(
        self,
        *,
        model: Any,
        flavor: str,
        call: Callable[[Any], Any],
        signature: Signature | None,
        input_example: Any,
        descriptor: Descriptor,
        version: Version | None,
    ) -> None:
        self.model = model
        self.flavor = flavor
        self.signature = signature
        self.input_example = input_example
        self.descriptor = descriptor
        self.version = version
        self._call = call

    def predict(self, data: Any) -> Any:
        """The model's prediction for a DataFrame, a numpy array, a list of records or a
        dict of columns; InvalidInput naming the column when it does not fit the signature."""
        prepared = self.signature.prepare(data) if self.signature is not None else data
        return self._call(prepared)

    def __repr__(self) -> str:
        where = self.version.reference if self.version else "a directory"
        return f"<Predictor {self.flavor} {where}>"


def flavor_named(name: str) -> Flavor:
    try:
        return FLAVORS[name]
    except KeyError:
        raise InvalidInput(
            f"unknown flavor {name!r}; known: {', '.join(sorted(FLAVORS))}"
        ) from None


def flavor_of(model: Any, *, unsafe_pickle: bool) -> Flavor:
    for flavor in SAFE_FLAVORS:
        if flavor.owns(model):
            return flavor
    if unsafe_pickle and PICKLE.owns(model):
        return PICKLE
    raise InvalidInput(
        f"no safe format for a {type(model).__module__}.{type(model).__qualname__}"
        f" (flavors: {', '.join(f.name for f in SAFE_FLAVORS)}); pass unsafe_pickle=True"
        " to pickle it, if whoever loads it may trust it"
    )


def save_model(
    model: Any,
    directory: str | Path,
    *,
    input_example: Any = None,
    unsafe_pickle: bool = False,
    init_kwargs: dict[str, Any] | None = None,
) -> Descriptor:
    """Write ``model`` under ``directory`` (created; must be empty) in a safe format, with
    ``modelyard.yaml`` and the input example; pickle only with ``unsafe_pickle=True``.

    ``init_kwargs``: for PyTorch, the keyword arguments that rebuild the model's class.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise InvalidInput(f"{root} is not empty; save_model writes into an empty directory")
    flavor = flavor_of(model, unsafe_pickle=unsafe_pickle)
    options: dict[str, Any] = {"init_kwargs": dict(init_kwargs)} if init_kwargs else {}
    try:
        try:
            saved = flavor.save(model, root, options)
        except NotSafe:
            if not unsafe_pickle:
                raise
            flavor = PICKLE
            saved = flavor.save(model, root, options)
        call = flavor.predictor(model, saved.options)
        return _describe(root, flavor, saved.files, saved.options, model, call, input_example)
    except BaseException:
        _empty(root)  # nothing half-written
        raise


def _empty(root: Path) -> None:
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def describe_directory(
    directory: str | Path,
    flavor_name: str,
    files: list[str],
    *,
    input_example: Any = None,
    unsafe_pickle: bool = False,
) -> Descriptor:
    """Write the descriptor of plain model files already in ``directory`` (what
    ``modelyard describe`` does): the files are loaded with the flavor to prove they open,
    and the model is run on the example to learn its outputs."""
    root = Path(directory)
    flavor = flavor_named(flavor_name)
    _refuse_pickle(flavor, unsafe_pickle)
    draft = Descriptor(flavor.name, flavor.format, flavor.library, None, tuple(files))
    paths = draft.paths(root)
    for path in paths:
        if not path.is_file():
            raise InvalidInput(f"{path} is not a file")
    options = flavor.inspect(paths)
    model = flavor.load(paths, options)
    call = flavor.predictor(model, options)
    return _describe(root, flavor, tuple(files), options, model, call, input_example)


def _describe(
    root: Path,
    flavor: Flavor,
    files: tuple[str, ...],
    options: dict[str, Any],
    model: Any,
    call: Callable[[Any], Any],
    input_example: Any,
) -> Descriptor:
    """Learn the signature by running the model on the example; write example and descriptor."""
    signature = example_file = None
    if input_example is not None:
        signature = infer_signature(input_example)
        if signature.input_form in ("columns", "records") and hasattr(model, "feature_names_in_"):
            # Fitted on named columns (scikit-learn's mark): hand it a DataFrame, not an array.
            signature = replace(signature, input_form="dataframe")
        output = call(signature.prepare(input_example))
        signature = replace(signature, outputs=infer_signature(input_example, output).outputs)
        example_file = EXAMPLE_FILE
        (root / EXAMPLE_FILE).write_text(example_to_json(input_example), encoding="utf-8")
    needed = list(flavor.requirements)
    if signature is not None and signature.input_form == "dataframe":
        needed.append("pandas")  # the signature hands the model a DataFrame
    requirements = {
        name: version for name in needed if (version := installed_version(name)) is not None
    }
    descriptor = Descriptor(
        flavor=flavor.name,
        format=flavor.format,
        library=flavor.library,
        library_version=library_version(flavor),
        files=files,
        signature=signature,
        input_example=example_file,
        unsafe_pickle=flavor is PICKLE,
        options=options,
        requirements=requirements,
        python=platform.python_version(),
    )
    descriptor.write(root)
    return descriptor


def library_version(flavor: Flavor) -> str | None:
    """The installed version of the flavor's library, under any name it ships as
    (xgboost or xgboost-cpu); Python's own for pickle."""
    if flavor is PICKLE:
        return platform.python_version()
    names = [
        n for n in flavor.requirements if n == flavor.library or n.startswith(f"{flavor.library}-")
    ]
    return next((v for n in names if (v := installed_version(n)) is not None), None)


def require_descriptor(version: Version) -> None:
    """Refuse, before downloading anything, a version with no descriptor: nothing would
    say which flavor opens its files."""
    if not any(entry.path == DESCRIPTOR_FILE for entry in version.files):
        raise InvalidInput(
            f"{version.reference} has no {DESCRIPTOR_FILE}, so nothing says how to load it:"
            f" register it with log_model, or describe its files with `modelyard describe`"
        )


def load_directory(
    path: str | Path, version: Version | None = None, *, unsafe_pickle: bool = False
) -> Predictor:
    """The model in a directory with a ``modelyard.yaml``, ready to predict.

    With ``version``, the files the descriptor names must be in its manifest with the same
    size and sha256 (the cached hashes of a verified download: a stat each) or nothing is
    loaded. A pickle loads only with ``unsafe_pickle=True``.
    """
    root = Path(path)
    descriptor = read_descriptor(root)
    flavor = flavor_named(descriptor.flavor)
    if descriptor.unsafe_pickle != (flavor is PICKLE):
        raise InvalidInput(
            f"{DESCRIPTOR_FILE}: unsafe_pickle must be true exactly for the pickle flavor"
        )
    _refuse_pickle(flavor, unsafe_pickle)
    if version is not None:
        verify_files(root, descriptor, version)
    paths = descriptor.paths(root)
    model = flavor.load(paths[: len(descriptor.files)], descriptor.options)
    example = (
        example_from_json(paths[-1].read_text(encoding="utf-8"))
        if descriptor.input_example
        else None
    )
    return Predictor(
        model=model,
        flavor=flavor.name,
        call=flavor.predictor(model, descriptor.options),
        signature=descriptor.signature,
        input_example=example,
        descriptor=descriptor,
        version=version,
    )


def verify_files(root: Path, descriptor: Descriptor, version: Version) -> None:
    """Every file a load reads must be the version's, byte for byte."""
    from modelyard.client.hashing import HashCache

    manifest = {entry.path: entry for entry in version.files}
    hashes = HashCache()
    try:
        for relative in (
            DESCRIPTOR_FILE,
            *descriptor.files,
            *filter(None, [descriptor.input_example]),
        ):
            entry = manifest.get(relative)
            if entry is None:
                raise InvalidInput(f"{relative} is not among the files of {version.reference}")
            local = root / relative
            digest = hashes.sha256(local, lambda _: None)
            if digest != entry.sha256:
                raise DigestMismatch(
                    f"{relative} hashes to sha256:{digest}, but {version.reference} holds"
                    f" sha256:{entry.sha256}; refusing to load it"
                )
    finally:
        hashes.close()


def _refuse_pickle(flavor: Flavor, unsafe_pickle: bool) -> None:
    if flavor is PICKLE and not unsafe_pickle:
        raise InvalidInput(
            "this model is a pickle, which runs code when loaded; pass unsafe_pickle=True"
            " only if you trust whoever registered it",
            code="unsafe_pickle_refused",
        )
