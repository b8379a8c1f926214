"""Flavors: log_model -> load_model round trips per framework, signatures, input validation,
pickle only when asked, verified files, descriptors that stay inside their directory, and
plain files described by `modelyard describe`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.tree import DecisionTreeClassifier
from typer.testing import CliRunner

import modelyard
from modelyard.cli.main import app
from modelyard.client.registry import Registry, model_cache
from modelyard.domain.errors import DigestMismatch, InvalidInput, InvalidPath
from modelyard.flavors import (
    DESCRIPTOR_FILE,
    Signature,
    infer_signature,
    load_directory,
    save_model,
)
from modelyard.flavors._pytorch import load_weights, save_weights


class Memoriser:
    """A model no safe format holds (a plain Python object): pickle only."""

    def __init__(self, answer: int) -> None:
        self.answer = answer

    def predict(self, data: Any) -> Any:
        return np.full(len(data), self.answer)


def double(values: Any) -> Any:
    """A function of this test module: a type skops must not trust."""
    return values * 2


@pytest.fixture(scope="module")
def iris() -> tuple[pd.DataFrame, pd.Series]:
    features, target = load_iris(return_X_y=True, as_frame=True)
    return features, target


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, np.ndarray]:
    features, target = load_breast_cancer(return_X_y=True)
    return features, target


@pytest.fixture(scope="module")
def pipeline(iris: tuple[pd.DataFrame, pd.Series]) -> Any:
    features, target = iris
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(features, target)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("registry") / "data"


@pytest.fixture(scope="module")
def reg(data_dir: Path) -> Iterator[Registry]:
    with modelyard.connect(str(data_dir)) as registry:
        yield registry


@pytest.fixture(scope="module")
def logged_pipeline(reg: Registry, pipeline: Any, iris: tuple[pd.DataFrame, pd.Series]) -> str:
    features, _ = iris
    version = reg.log_model(pipeline, "iris-sk", input_example=features[:5], metrics={"a": 1})
    return version.reference


def test_sklearn_pipeline_round_trip(
    reg: Registry, logged_pipeline: str, pipeline: Any, iris: tuple[pd.DataFrame, pd.Series]
) -> None:
    features, _ = iris
    predictor = reg.load_model(logged_pipeline)
    version = predictor.version
    assert version is not None and version.reference == logged_pipeline
    assert (version.framework, version.format) == ("scikit-learn", "skops")
    assert version.environment is not None and "scikit-learn" in version.environment.packages
    assert {f.path for f in version.files} == {"model.skops", DESCRIPTOR_FILE, "input_example.json"}
    assert predictor.flavor == "sklearn"
    assert type(predictor.model).__name__ == "Pipeline"
    np.testing.assert_array_equal(predictor.predict(features), pipeline.predict(features))
    pd.testing.assert_frame_equal(predictor.input_example, features[:5])
    # Every accepted kind of input gives the same answer.
    expected = pipeline.predict(features[:4])
    for data in (
        features[:4].to_dict("records"),
        features[:4].to_dict("list"),
        features[:4].to_numpy(),
    ):
        np.testing.assert_array_equal(predictor.predict(data), expected)


def test_a_loaded_version_comes_from_the_cache_by_its_digest(
    reg: Registry, logged_pipeline: str
) -> None:
    version = reg.resolve(logged_pipeline)
    directory = model_cache(version)
    reg.load_model(logged_pipeline)
    assert directory.is_dir() and version.manifest_digest.removeprefix("sha256:") == directory.name
    assert (directory / "model.skops").is_file()


def test_xgboost_round_trip(reg: Registry, cancer: tuple[np.ndarray, np.ndarray]) -> None:
    xgb = pytest.importorskip("xgboost")
    features, target = cancer
    model = xgb.XGBClassifier(n_estimators=5, max_depth=2).fit(features, target)
    version = reg.log_model(model, "cancer-xgb", input_example=features[:3])
    assert (version.framework, version.format) == ("xgboost", "ubjson")
    predictor = reg.load_model(version.reference)
    assert predictor.descriptor.library_version == xgb.__version__
    assert type(predictor.model).__name__ == "XGBClassifier"
    np.testing.assert_array_equal(predictor.predict(features), model.predict(features))


@pytest.mark.parametrize("dataset", ["iris", "cancer"])
def test_lightgbm_round_trip(
    reg: Registry,
    dataset: str,
    iris: tuple[pd.DataFrame, pd.Series],
    cancer: tuple[np.ndarray, np.ndarray],
) -> None:
    lgb = pytest.importorskip("lightgbm")
    features, target = iris if dataset == "iris" else cancer
    model = lgb.LGBMClassifier(n_estimators=5, num_leaves=4, verbose=-1).fit(features, target)
    version = reg.log_model(model, f"{dataset}-lgb", input_example=features[:3])
    assert (version.framework, version.format) == ("lightgbm", "lightgbm-text")
    predictor = reg.load_model(version.reference)
    np.testing.assert_array_equal(predictor.predict(features), model.predict(features))


def test_onnx_round_trip(reg: Registry, iris: tuple[pd.DataFrame, pd.Series]) -> None:
    skl2onnx = pytest.importorskip("skl2onnx")
    ort = pytest.importorskip("onnxruntime")
    features = iris[0].to_numpy(dtype=np.float32)
    model = LogisticRegression(max_iter=300).fit(features, iris[1])
    proto = skl2onnx.to_onnx(model, features[:1])
    version = reg.log_model(proto, "iris-onnx", input_example=features[:5])
    assert (version.framework, version.format) == ("onnx", "onnx")
    predictor = reg.load_model(version.reference)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    direct = session.run(None, {session.get_inputs()[0].name: features})[0]
    np.testing.assert_array_equal(predictor.predict(features), direct)
    assert predictor.signature is not None and predictor.signature.inputs[0].shape == (-1, 4)


def test_pytorch_round_trip(reg: Registry) -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed here")
    model = torch.nn.Linear(4, 2)  # an importable class: torch.nn.modules.linear:Linear
    example = np.ones((3, 4), dtype=np.float32)
    version = reg.log_model(
        model,
        "linear-torch",
        input_example=example,
        init_kwargs={"in_features": 4, "out_features": 2},
    )
    assert (version.framework, version.format) == ("pytorch", "safetensors")
    predictor = reg.load_model(version.reference)
    with torch.no_grad():
        expected = model(torch.as_tensor(example)).numpy()
    np.testing.assert_array_equal(predictor.predict(example), expected)


def test_safetensors_weights_round_trip_with_numpy(tmp_path: Path) -> None:
    weights = {
        "layer.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
        "layer.bias": np.array([1, -2, 3], dtype=np.int64),
    }
    save_weights(weights, tmp_path / "w.safetensors")
    loaded = load_weights(tmp_path / "w.safetensors")
    assert loaded.keys() == weights.keys()
    for name, array in weights.items():
        assert loaded[name].dtype == array.dtype
        np.testing.assert_array_equal(loaded[name], array)


# -- signatures ----------------------------------------------------------------------------


def test_signature_of_a_dataframe_names_its_columns_and_dtypes() -> None:
    frame = pd.DataFrame({"age": [31, 40], "income": [1.5, 2.0], "city": ["Oslo", "Lima"]})
    signature = infer_signature(frame, np.array([0, 1]))
    assert signature.input_form == "dataframe"
    assert [(s.name, s.dtype) for s in signature.inputs] == [
        ("age", "int64"),
        ("income", "float64"),
        ("city", "str"),
    ]
    assert [(s.dtype, s.shape) for s in signature.outputs] == [("int64", (-1,))]
    assert Signature.from_dict(json.loads(json.dumps(signature.to_dict()))) == signature


def test_signature_of_an_array_is_a_tensor_with_a_free_batch_dimension() -> None:
    signature = infer_signature(np.zeros((5, 3, 2), dtype=np.float32))
    assert signature.is_tensor
    assert [(s.dtype, s.shape) for s in signature.inputs] == [("float32", (-1, 3, 2))]
    with pytest.raises(InvalidInput, match=r"shape \[-1, 3, 2\].*\[5, 3\]"):
        signature.prepare(np.zeros((5, 3)))


def test_signature_of_columns_and_of_records_agree() -> None:
    columns = {"x": [1.0, 2.0], "n": [3, 4]}
    records = [{"x": 1.0, "n": 3}, {"x": 2.0, "n": 4}]
    by_columns, by_records = infer_signature(columns), infer_signature(records)
    assert (by_columns.input_form, by_records.input_form) == ("columns", "records")
    assert by_columns.inputs == by_records.inputs
    assert [(s.name, s.dtype) for s in by_records.inputs] == [("x", "float64"), ("n", "int64")]


def test_a_record_missing_a_column_is_named() -> None:
    with pytest.raises(InvalidInput, match="record 1 has no column 'n'"):
        infer_signature([{"x": 1.0, "n": 3}, {"x": 2.0}])


def test_wrong_inputs_are_errors_naming_the_column(
    reg: Registry, logged_pipeline: str, iris: tuple[pd.DataFrame, pd.Series]
) -> None:
    features, _ = iris
    predictor = reg.load_model(logged_pipeline)
    column = "petal width (cm)"
    named = re.escape(column)
    with pytest.raises(InvalidInput, match=rf"missing column .{named}. \(float64\)"):
        predictor.predict(features.drop(columns=[column]))
    with pytest.raises(InvalidInput, match="unexpected column 'colour'"):
        predictor.predict(features.assign(colour="red"))
    with pytest.raises(InvalidInput, match=rf"column .{named}.: expected float64, got str"):
        predictor.predict(features.assign(**{column: "wide"}))
    # A safe cast is made: integers where floats are expected.
    whole = features.round().astype("int64")
    assert predictor.predict(whole).shape == (len(features),)


def test_a_float_where_an_integer_is_expected_is_refused() -> None:
    signature = infer_signature({"n": [1, 2]})
    with pytest.raises(InvalidInput, match="column 'n': expected int64, got float64"):
        signature.prepare({"n": [1.5, 2.0]})


# -- pickle, trusted types -----------------------------------------------------------------


def test_pickle_is_refused_unless_asked_for_and_then_recorded(reg: Registry) -> None:
    model = Memoriser(7)
    with pytest.raises(InvalidInput, match="unsafe_pickle=True"):
        reg.log_model(model, "memo")
    version = reg.log_model(model, "memo", unsafe_pickle=True, input_example=[[1.0], [2.0]])
    assert version.format == "pickle"
    with pytest.raises(InvalidInput, match="pickle") as refused:
        reg.load_model(version.reference)
    assert refused.value.code == "unsafe_pickle_refused"
    predictor = reg.load_model(version.reference, unsafe_pickle=True)
    assert predictor.descriptor.unsafe_pickle is True
    assert predictor.predict(np.zeros((3, 1))).tolist() == [7, 7, 7]


def test_skops_never_trusts_a_foreign_type(tmp_path: Path, iris: tuple[pd.DataFrame, Any]) -> None:
    features, target = iris
    model = make_pipeline(FunctionTransformer(double), LogisticRegression(max_iter=300))
    model.fit(features, target)
    with pytest.raises(InvalidInput, match=r"test_flavors\.double"):
        save_model(model, tmp_path / "safe")
    descriptor = save_model(model, tmp_path / "pickled", unsafe_pickle=True)
    assert (descriptor.flavor, descriptor.unsafe_pickle) == ("pickle", True)


def test_skops_types_missing_from_the_descriptor_are_refused(
    tmp_path: Path, iris: tuple[pd.DataFrame, Any]
) -> None:
    features, target = iris
    model = DecisionTreeClassifier(max_depth=2).fit(features, target)
    descriptor = save_model(model, tmp_path, input_example=features[:2])
    needed = descriptor.options["trusted_types"]
    assert needed == ["sklearn.tree._tree.Tree"]
    np.testing.assert_array_equal(
        load_directory(tmp_path).predict(features), model.predict(features)
    )
    _edit_descriptor(tmp_path, lambda d: d["options"].update(trusted_types=[]))
    with pytest.raises(InvalidInput, match=f"not trusted: {needed[0]}"):
        load_directory(tmp_path)


# -- verification and paths ----------------------------------------------------------------


def test_a_tampered_blob_is_never_loaded(
    reg: Registry, data_dir: Path, pipeline: Any, iris: tuple[pd.DataFrame, Any]
) -> None:
    version = reg.log_model(pipeline, "tampered", input_example=iris[0][:2])
    model_file = next(f for f in version.files if f.path == "model.skops")
    # A file this small is held in the database (larger ones in blobs/): alter it there.
    with contextlib.closing(sqlite3.connect(data_dir / "registry.db")) as db, db:
        changed = db.execute(
            "UPDATE blobs SET content = ? WHERE digest = ? AND content IS NOT NULL",
            (b"x" * model_file.size, model_file.sha256),
        ).rowcount
    assert changed == 1
    with pytest.raises(DigestMismatch, match=r"model\.skops"):
        reg.load_model(version.reference)
    assert not (model_cache(version) / "model.skops").exists()


def test_a_tampered_copy_in_a_directory_is_refused(
    reg: Registry, logged_pipeline: str, tmp_path: Path
) -> None:
    version = reg.resolve(logged_pipeline)
    reg.download(version, tmp_path)
    model_file = tmp_path / "model.skops"
    model_file.write_bytes(bytes(reversed(model_file.read_bytes())))
    with pytest.raises(DigestMismatch, match=r"model.skops hashes to sha256:"):
        load_directory(tmp_path, version)
    # load_model puts the verified bytes back in its own cache and loads.
    cached = model_cache(version) / "model.skops"
    reg.load_model(logged_pipeline)
    cached.write_bytes(b"0" * cached.stat().st_size)
    assert reg.load_model(logged_pipeline).predict([[5.0, 3.0, 1.5, 0.2]]).shape == (1,)
    entry = next(f for f in version.files if f.path == "model.skops")
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == entry.sha256


def test_a_version_without_a_descriptor_says_how_to_get_one(reg: Registry, tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\x01" * 16)
    version = reg.register("no-descriptor", tmp_path)
    with pytest.raises(InvalidInput, match=r"no modelyard\.yaml.*modelyard describe"):
        reg.load_model(version.reference)
    assert not model_cache(version).exists()  # refused before downloading anything


def test_save_model_leaves_nothing_behind_when_the_example_fails(
    tmp_path: Path, pipeline: Any
) -> None:
    with pytest.raises(ValueError, match="features"):
        save_model(pipeline, tmp_path, input_example=np.zeros((2, 7)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "escape", ["../outside.skops", "/etc/passwd", "sub/../../outside.skops", "link.skops"]
)
def test_a_descriptor_cannot_name_a_file_outside_its_directory(
    tmp_path: Path, pipeline: Any, escape: str
) -> None:
    model_dir = tmp_path / "model"
    save_model(pipeline, model_dir)
    (tmp_path / "outside.skops").write_bytes((model_dir / "model.skops").read_bytes())
    (model_dir / "link.skops").symlink_to(tmp_path / "outside.skops")
    _edit_descriptor(model_dir, lambda d: d.update(files=[escape]))
    with pytest.raises(InvalidPath):
        load_directory(model_dir)


def test_an_unknown_flavor_is_refused(tmp_path: Path, pipeline: Any) -> None:
    save_model(pipeline, tmp_path)
    _edit_descriptor(tmp_path, lambda d: d.update(flavor="keras"))
    with pytest.raises(InvalidInput, match="unknown flavor 'keras'"):
        load_directory(tmp_path)


def test_a_descriptor_cannot_smuggle_a_pickle_as_another_flavor(tmp_path: Path) -> None:
    save_model(Memoriser(1), tmp_path, unsafe_pickle=True)
    _edit_descriptor(tmp_path, lambda d: d.update(unsafe_pickle=False))
    with pytest.raises(InvalidInput, match="unsafe_pickle"):
        load_directory(tmp_path, unsafe_pickle=True)


# -- plain files, describe, the CLI's environment -------------------------------------------


def test_describe_then_register_plain_files_loads(
    reg: Registry, data_dir: Path, pipeline: Any, iris: tuple[pd.DataFrame, Any], tmp_path: Path
) -> None:
    import skops.io

    features, _ = iris
    plain = tmp_path / "plain"
    plain.mkdir()
    skops.io.dump(pipeline, plain / "clf.skops")
    (plain / "requirements.txt").write_text("scikit-learn==1.9.1\nskops>=0.10  # io\n")
    example = tmp_path / "example.json"
    example.write_text(json.dumps(features[:3].to_dict("records")))
    runner = CliRunner()
    args = ["describe", str(plain), "--flavor", "sklearn", "--file", "clf.skops"]
    result = runner.invoke(app, [*args, "--input-example", str(example), "--json"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.output)
    # Records, for a pipeline fitted on named columns, are handed to it as a DataFrame.
    assert written["flavor"] == "sklearn" and written["signature"]["input_form"] == "dataframe"
    checked = runner.invoke(app, ["describe", str(plain)])
    assert checked.exit_code == 0 and "checked" in checked.output, checked.output

    url = str(data_dir)
    registered = runner.invoke(app, ["register", "plain", str(plain), "--url", url, "--json"])
    assert registered.exit_code == 0, registered.output
    version = json.loads(registered.output)
    # The environment is what the directory declares, not the CLI's own virtualenv.
    assert version["environment"]["packages"] == {"scikit-learn": "1.9.1", "skops": ">=0.10"}
    predictor = reg.load_model(version["reference"])
    np.testing.assert_array_equal(predictor.predict(features), pipeline.predict(features))


def test_a_hand_written_descriptor_loads_the_same(
    reg: Registry, cancer: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    xgb = pytest.importorskip("xgboost")
    features, target = cancer
    model = xgb.XGBClassifier(n_estimators=3, max_depth=2).fit(features, target)
    model.save_model(str(tmp_path / "model.ubj"))
    (tmp_path / DESCRIPTOR_FILE).write_text(
        "flavor: xgboost\nfiles: [model.ubj]\noptions: {class: XGBClassifier}\n"
    )
    version = reg.register("hand-written", tmp_path)
    predictor = reg.load_model(version.reference)
    assert predictor.signature is None  # no example: the data goes to the model as it is
    np.testing.assert_array_equal(predictor.predict(features), model.predict(features))


def test_describe_refuses_a_file_it_cannot_open(tmp_path: Path) -> None:
    (tmp_path / "model.skops").write_bytes(b"not a zip")
    args = ["describe", str(tmp_path), "--flavor", "sklearn", "--file", "model.skops"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert not (tmp_path / DESCRIPTOR_FILE).exists()


@pytest.mark.parametrize("choice", ["none", "auto", "conda.yaml", "default-none"])
def test_register_environment_option(data_dir: Path, tmp_path: Path, choice: str) -> None:
    model_dir = tmp_path / "files"
    model_dir.mkdir()
    (model_dir / "weights.bin").write_bytes(b"\x00" * 8)
    (tmp_path / "conda.yaml").write_text(
        "dependencies:\n  - python=3.11\n  - numpy=1.26\n  - pip:\n    - skops==0.16\n"
    )
    option = {"none": ["--environment", "none"], "auto": ["--environment", "auto"]}.get(
        choice, ["--environment", str(tmp_path / "conda.yaml")] if choice == "conda.yaml" else []
    )
    url = str(data_dir)
    result = CliRunner().invoke(
        app, ["register", f"env-{choice}", str(model_dir), *option, "--url", url, "--json"]
    )
    assert result.exit_code == 0, result.output
    environment = json.loads(result.output)["environment"]
    if choice in ("none", "default-none"):
        assert environment is None
    elif choice == "auto":
        assert "pytest" in environment["packages"]
    else:
        assert environment["python"] == "3.11"
        assert environment["packages"] == {"numpy": "1.26", "skops": "0.16"}


def test_import_modelyard_imports_no_framework() -> None:
    code = (
        "import sys, modelyard, modelyard.flavors;"
        "heavy = {'sklearn', 'skops', 'xgboost', 'lightgbm', 'onnx', 'onnxruntime', 'torch',"
        " 'pandas', 'numpy', 'safetensors'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def _edit_descriptor(directory: Path, change: Any) -> None:
    path = directory / DESCRIPTOR_FILE
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))
