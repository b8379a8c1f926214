"""The model-file scanner against a corpus built here: one malicious file per known bypass
class, and real models saved by the frameworks themselves. Nothing here is ever loaded."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import pickle
import random
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

import modelyard
from modelyard.cli.main import app
from modelyard.domain import onnx_model
from modelyard.domain.errors import InvalidInput
from modelyard.domain.scanning import (
    DEFAULT_ALLOWLIST,
    Allowlist,
    Limits,
    ScanReport,
    scan_bytes,
    scan_head,
    scan_path,
)
from modelyard.service.scans import HEAD_BYTES

# -- building pickles by hand -------------------------------------------------------------------


def text(value: str) -> bytes:
    """SHORT_BINUNICODE: a string push."""
    raw = value.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def call_global(module: str, name: str, proto: int = 2) -> bytes:
    """GLOBAL module name, called with ('echo',): the classic payload."""
    head = b"" if proto < 2 else b"\x80" + bytes([proto])
    return head + f"c{module}\n{name}\n(S'echo'\ntR.".encode()


def call_stack_global(module: str, name: str) -> bytes:
    """Protocol 4: the strings memoized, popped, fetched back, then STACK_GLOBAL."""
    return (
        b"\x80\x04"
        + text(module)
        + b"\x940"  # MEMOIZE 0, POP
        + text(name)
        + b"\x940"  # MEMOIZE 1, POP
        + b"h\x00h\x01\x93"  # BINGET 0, BINGET 1, STACK_GLOBAL
        + text("echo")
        + b"\x85R."  # TUPLE1, REDUCE, STOP
    )


class Payload:
    """What an attacker pickles: loading it would call ``target(*args)``."""

    def __init__(self, target: Callable[..., Any], *args: Any) -> None:
        self.target, self.args = target, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.target, self.args)


def evil(proto: int = 4) -> bytes:
    return pickle.dumps(Payload(os.system, "echo owned"), protocol=proto)


def zipped(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def corrupt_crc(members: dict[str, bytes]) -> bytes:
    """A zip of stored ``members`` with the first byte of the first one's data flipped,
    the directory's CRC left as it was. Found by the whole data, not a byte of it: a
    header's timestamp holds that byte at some times of day."""
    archive = zipped(members)
    data = next(iter(members.values()))
    at = archive.index(data)
    return archive[:at] + bytes([data[0] ^ 0x01]) + archive[at + 1 :]


def object_npy(payload: object) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([payload], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def joblib_bytes(value: object, compress: str = "") -> bytes:
    """What joblib.dump writes; joblib compresses only into named files, so the wrappers
    are applied here the way its compressors write them."""
    buffer = io.BytesIO()
    joblib.dump(value, buffer)
    wrap = {"gzip": gzip.compress, "lzma": lzma.compress, "bz2": bz2.compress, "": bytes}
    return wrap[compress](buffer.getvalue())


def legacy_torch(model: bytes) -> bytes:
    """torch's pre-1.6 layout: magic, protocol, sys info, the model, storage keys, raw data."""
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    info = pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
    keys = pickle.dumps(["0"], protocol=2)
    return magic + pickle.dumps(1001, protocol=2) + info + model + keys + b"\x80\x02raw bytes"


def onnx_bytes(
    nodes: list[Any],
    *,
    initializers: tuple[Any, ...] = (),
    functions: tuple[Any, ...] = (),
    opsets: tuple[tuple[str, int], ...] = (("", 17),),
) -> bytes:
    """A model of ``nodes`` from x to y, as onnx's own helpers write it."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        initializer=list(initializers),
    )
    opset_imports = [helper.make_opsetid(domain, version) for domain, version in opsets]
    model = helper.make_model(graph, functions=list(functions), opset_imports=opset_imports)
    return bytes(model.SerializeToString())


def onnx_node(op: str, domain: str = "", **attributes: Any) -> Any:
    from onnx import helper

    return helper.make_node(op, ["x"], ["y"], domain=domain, **attributes)


def custom_op(in_subgraph: bool = False) -> bytes:
    """A node of a domain no runtime implements, at the top or inside an If's branch."""
    from onnx import TensorProto, helper

    custom = onnx_node("Decrypt", "com.acme")
    if not in_subgraph:
        return onnx_bytes([custom], opsets=(("", 17), ("com.acme", 1)))
    output = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])]
    branch = helper.make_graph([custom], "then", [], output)
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "else", [], output)
    node = helper.make_node("If", ["x"], ["y"], then_branch=branch, else_branch=other)
    return onnx_bytes([node], opsets=(("", 17), ("com.acme", 1)))


def external_data(location: str) -> bytes:
    """A model whose weight lies in the file ``location`` names."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones(4, dtype=np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", location
    node = helper.make_node("Add", ["x", "w"], ["y"])
    return onnx_bytes([node], initializers=(weight,))


def skops_naming(module: str, name: str, loader: str = "ObjectNode") -> bytes:
    """A skops file whose schema has a node of ``module.name`` (how skops writes one)."""
    node = {"__class__": name, "__module__": module, "__loader__": loader, "__id__": 2}
    content = {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode"}
    schema = {
        "__class__": "FunctionTransformer",
        "__module__": "sklearn.preprocessing._function_transformer",
        "__loader__": "ObjectNode",
        "__id__": 1,
        "content": {**content, "content": {"func": node}},
        "protocol": 2,
        "_skops_version": "0.16.0",
    }
    return zipped({"schema.json": json.dumps(schema).encode()})


MALICIOUS: dict[str, Callable[[], bytes]] = {
    "os-system-global-p0.pkl": lambda: call_global("os", "system", proto=0),
    "os-system-global-p2.pkl": lambda: call_global("os", "system"),
    "posix-system-dumps-p2.pkl": lambda: evil(2),
    "os-system-stack-global-p4.pkl": lambda: call_stack_global("os", "system"),
    "inst-opcode.pkl": lambda: b"(S'echo'\nios\nsystem\n.",
    "builtins-eval.pkl": lambda: pickle.dumps(Payload(eval, "1+1"), protocol=4),
    "python2-builtin-eval.pkl": lambda: call_global("__builtin__", "eval"),
    "getattr-chain.pkl": lambda: (
        b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'echo'\ntR."
    ),
    "pip-main.pkl": lambda: call_global("pip", "main"),
    "pkgutil-resolve-name.pkl": lambda: call_stack_global("pkgutil", "resolve_name"),
    "importlib-import-module.pkl": lambda: call_global("importlib", "import_module"),
    "runpy.pkl": lambda: call_global("runpy", "run_path"),
    "operator-attrgetter.pkl": lambda: call_global("operator", "attrgetter"),
    "functools-partial.pkl": lambda: call_global("functools", "partial"),
    "numpy-testing-runstring.pkl": lambda: call_global("numpy.testing._private.utils", "runstring"),
    "numpy-f2py.pkl": lambda: call_global("numpy.f2py", "compile"),
    "torch-inductor.pkl": lambda: call_global("torch._inductor.codecache", "PyCodeCache"),
    "sklearn-utils-testing.pkl": lambda: call_global("sklearn.utils._testing", "TempMemmap"),
    "sklearn-tests-module.pkl": lambda: call_global("sklearn.linear_model.tests.test_base", "Fx"),
    "sklearn-prefix-lookalike.pkl": lambda: call_global("sklearn.linear_model_evil", "Model"),
    "dotted-numpy-testing.pkl": lambda: call_stack_global("numpy", "testing._private.utils.run"),
    "dotted-os-path.pkl": lambda: call_stack_global("os", "path.join"),
    "dotted-globals.pkl": lambda: call_stack_global(
        "joblib.numpy_pickle", "NumpyArrayWrapper.__init__.__globals__"
    ),
    "builtins-import-stack-global.pkl": lambda: call_stack_global("builtins", "__import__"),
    "unresolvable-stack-global.pkl": lambda: b"\x80\x04K\x01K\x02\x93)R.",
    "ext1.pkl": lambda: b"\x80\x02\x82\x01)R.",
    "ext1-no-magic.pkl": lambda: b"\x82\x01)R.",  # protocol 1 needs no PROTO opcode
    "truncated.pkl": lambda: pickle.dumps({"weights": list(range(50))}, protocol=4)[:-7],
    "bad-opcode.pkl": lambda: b"\x80\x04\xff\xff.",
    "second-pickle.pkl": lambda: pickle.dumps([1, 2], protocol=2) + evil(2),
    "legacy-torch.pt": lambda: legacy_torch(evil(2)),
    "renamed.safetensors": lambda: evil(4),
    "renamed-p0-weights.txt": lambda: call_global("os", "system", proto=0),
    "crc-corrupted.zip": lambda: corrupt_crc({"a/data.pkl": pickle.dumps([1.0])}),
    "pytorch-style.pt": lambda: zipped({"archive/data.pkl": evil(2), "archive/version": b"3\n"}),
    "p0-in-large-member.zip": lambda: zipped(
        {"weights": call_global("os", "system", proto=0) + b" " * 100_000}  # no magic, > 64 KiB
    ),
    "zip-in-zip.zip": lambda: zipped({"inner.zip": zipped({"archive/data.pkl": evil()})}),
    "deflated-member.zip": lambda: zipped({"model.bin": evil()}, zipfile.ZIP_DEFLATED),
    "object-dtype.npy": lambda: object_npy(Payload(os.system, "echo")),
    "object-in-npz.npz": lambda: zipped({"a.npy": object_npy(Payload(os.system, "echo"))}),
    "gzip-joblib.joblib": lambda: joblib_bytes(Payload(os.system, "echo"), "gzip"),
    "lzma-joblib.joblib": lambda: joblib_bytes(Payload(os.system, "echo"), "lzma"),
    "bz2-joblib.joblib": lambda: joblib_bytes(Payload(os.system, "echo"), "bz2"),
    "joblib-object-array.joblib": lambda: joblib_bytes(
        {"w": np.array([Payload(os.system, "echo")], dtype=object)}
    ),
    "nested-too-deep.zip": lambda: _nest(zipped({"x.txt": b"fine"}), 8),
    "truncated-gzip.gz": lambda: gzip.compress(pickle.dumps([1.0] * 100))[:-12],
    "lz4-frame.lz4": lambda: b"\x04\x22\x4d\x18" + b"\x00" * 20,
    "custom-op.onnx": custom_op,
    "custom-op-in-subgraph.onnx": lambda: custom_op(in_subgraph=True),
    "external-data-climbs-out.onnx": lambda: external_data("../../etc/passwd"),
    "external-data-absolute.onnx": lambda: external_data("/etc/shadow"),
    "external-data-windows.onnx": lambda: external_data("C:\\Windows\\win.ini"),
    "truncated.onnx": lambda: custom_op()[:-5],
    "skops-os-system.skops": lambda: skops_naming("os", "system", "FunctionNode"),
    "skops-users-class.skops": lambda: skops_naming("acme.models", "Scorer"),
}


def _nest(archive: bytes, times: int) -> bytes:
    for _ in range(times):
        archive = zipped({"inner.zip": archive})
    return archive


# -- the clean corpus: what the frameworks write ------------------------------------------------


@pytest.fixture(scope="module")
def iris() -> tuple[Any, Any]:
    return load_iris(return_X_y=True)


def sklearn_models(iris: tuple[Any, Any]) -> dict[str, Any]:
    X, y = iris
    return {
        "logistic": LogisticRegression(max_iter=300).fit(X, y),
        "forest": RandomForestClassifier(n_estimators=3, random_state=np.random.RandomState(0)).fit(
            X, y
        ),
        "pipeline": Pipeline(
            [("scale", StandardScaler()), ("model", LogisticRegression(max_iter=300))]
        ).fit(X, y),
    }


@pytest.fixture(scope="module")
def clean(iris: tuple[Any, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real files, written by the libraries' own save functions."""
    import xgboost

    root = tmp_path_factory.mktemp("clean")
    X, y = iris
    for name, model in sklearn_models(iris).items():
        joblib.dump(model, root / f"{name}.joblib")
        joblib.dump(model, root / f"{name}.joblib.gz", compress=("gzip", 3))
        joblib.dump(model, root / f"{name}.joblib.xz", compress=("xz", 3))
        joblib.dump(model, root / f"{name}.joblib.z", compress=("zlib", 3))
        for proto in (2, 4, 5):
            (root / f"{name}-p{proto}.pkl").write_bytes(pickle.dumps(model, protocol=proto))
    np.save(root / "floats.npy", np.random.default_rng(0).normal(size=(20, 3)))
    np.savez(root / "arrays.npz", a=np.arange(10.0), b=np.ones((2, 2), dtype=np.int32))
    np.savez_compressed(root / "compressed.npz", a=np.arange(1000.0))
    (root / "array-p2.pkl").write_bytes(pickle.dumps(np.arange(5.0), protocol=2))
    (root / "ordered.pkl").write_bytes(pickle.dumps(OrderedDict(a={1, 2}), protocol=4))
    booster = xgboost.XGBClassifier(n_estimators=2, max_depth=2).fit(X, y)
    booster.save_model(root / "xgb.json")
    booster.save_model(root / "xgb.ubj")
    (root / "xgb.pkl").write_bytes(pickle.dumps(booster))
    joblib.dump(booster, root / "xgb.joblib")
    (root / "notes.csv").write_text("feature,importance\nsepal,0.4\n")
    (root / "config.yaml").write_text("name: churn\nthreshold: 0.5\n")
    (root / "metrics.json").write_text(json.dumps({"auc": 0.9}))
    (root / "chart.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    (root / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 32)
    storage = b"\x80\x02 raw float bytes that look like a pickle"
    (root / "pytorch-style.pt").write_bytes(
        zipped(
            {
                "archive/data.pkl": pickle.dumps(OrderedDict(weight=1.0), protocol=2),
                "archive/data/0": storage,
                "archive/version": b"3\n",
            }
        )
    )
    _onnx_and_skops(root, iris)
    _optional_frameworks(root, X, y)
    return {p.name: p for p in sorted(root.iterdir())}


def _onnx_and_skops(root: Path, iris: tuple[Any, Any]) -> None:
    """Models as skl2onnx, onnx and skops save them (all three are test dependencies)."""
    import onnx
    import skops.io
    from onnx import helper, numpy_helper
    from skl2onnx import to_onnx
    from sklearn.preprocessing import FunctionTransformer

    X, y = iris
    models = sklearn_models(iris)
    (root / "logistic.onnx").write_bytes(
        to_onnx(models["logistic"], X[:1].astype(np.float32)).SerializeToString()
    )
    # Weights kept beside the model, as onnx saves a large one.
    weight = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    added = onnx_bytes([helper.make_node("Add", ["x", "w"], ["y"])], initializers=(weight,))
    onnx.save_model(
        onnx.load_from_string(added),
        str(root / "external.onnx"),
        save_as_external_data=True,
        location="external.weights",
        size_threshold=0,
    )
    twice = helper.make_function(
        "local.fn",
        "Twice",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    (root / "own-function.onnx").write_bytes(
        onnx_bytes(
            [onnx_node("Twice", "local.fn")],
            functions=(twice,),
            opsets=(("", 17), ("local.fn", 1)),
        )
    )
    for name, model in models.items():
        skops.io.dump(model, root / f"{name}.skops")
    log1p = Pipeline(
        [("log", FunctionTransformer(np.log1p)), ("model", LogisticRegression(max_iter=300))]
    )
    skops.io.dump(log1p.fit(X, y), root / "log1p-pipeline.skops")


def _optional_frameworks(root: Path, X: Any, y: Any) -> None:
    try:
        import lightgbm
    except ImportError:
        pass
    else:
        model = lightgbm.LGBMClassifier(n_estimators=2, verbose=-1).fit(X, y)
        model.booster_.save_model(str(root / "lgbm.txt"))
        (root / "lgbm.pkl").write_bytes(pickle.dumps(model))
    try:
        from safetensors.numpy import save_file
    except ImportError:
        pass
    else:
        save_file({"w": np.ones((3, 3), dtype=np.float32)}, str(root / "w.safetensors"))
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError:
        return
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph), str(root / "identity.onnx"))


class UsersModel:
    """A class of the user's own: the allowlist cannot know it."""

    def __init__(self) -> None:
        self.weights = [1.0, 2.0]


# -- the rates ----------------------------------------------------------------------------------


def test_detection_rate_and_false_positives(clean: dict[str, Path]) -> None:
    caught = [
        name for name, build in MALICIOUS.items() if scan_bytes(name, build()).verdict == "fail"
    ]
    missed = sorted(set(MALICIOUS) - set(caught))
    flagged = {name: scan_path(path).findings for name, path in clean.items()}
    false_positives = sorted(name for name, found in flagged.items() if found)
    detection = len(caught) / len(MALICIOUS)
    print(
        f"\ndetection {len(caught)}/{len(MALICIOUS)} malicious files;"
        f" false positives {len(false_positives)}/{len(clean)} clean files"
    )
    assert detection == 1.0, f"caught {len(caught)}/{len(MALICIOUS)}; missed {missed}"
    assert false_positives == [], (
        f"{len(false_positives)}/{len(clean)} clean files flagged: "
        + "; ".join(f"{n}: {[f.message for f in flagged[n]]}" for n in false_positives)
    )
    assert len(clean) >= 40  # the corpus holds what it should (optional frameworks installed)


@pytest.mark.parametrize("name", sorted(MALICIOUS))
def test_each_malicious_file_fails_for_its_reason(name: str) -> None:
    report = scan_bytes(name, MALICIOUS[name]())
    assert report.verdict == "fail", report.as_dict()
    expected = {
        "unresolvable-stack-global.pkl": "unresolvable_import",
        "ext1.pkl": "extension_registry",
        "ext1-no-magic.pkl": "extension_registry",
        "truncated.pkl": "truncated",
        "bad-opcode.pkl": "malformed_pickle",
        "crc-corrupted.zip": "crc_mismatch",
        "nested-too-deep.zip": "nesting_too_deep",
        "truncated-gzip.gz": "truncated",
        "lz4-frame.lz4": "unsupported_compression",
        "custom-op.onnx": "custom_op_domain",
        "custom-op-in-subgraph.onnx": "custom_op_domain",
        "external-data-climbs-out.onnx": "external_data_escapes",
        "external-data-absolute.onnx": "external_data_escapes",
        "external-data-windows.onnx": "external_data_escapes",
        "truncated.onnx": "malformed_onnx",
    }.get(name, "import_not_allowed")
    assert expected in {f.reason for f in report.findings}, report.as_dict()


def test_random_bytes_are_not_taken_for_pickles() -> None:
    """Raw weights look random. The probe for magicless pickles took an EXT or STACK_GLOBAL
    opcode met before the first error for one in 1.3% of such files; what is left are
    bytes that start like a pickle or a compressed stream and then break (about 0.03%)."""
    rng = random.Random(15)
    flagged = [i for i in range(2000) if scan_bytes("w.bin", rng.randbytes(2048)).findings]
    assert len(flagged) <= 2, flagged


def test_findings_say_where_and_what() -> None:
    report = scan_bytes("model.pt", MALICIOUS["pytorch-style.pt"]())
    (finding,) = report.findings
    assert finding.path == "model.pt!archive/data.pkl"
    assert finding.imports in ("posix.system", "nt.system")
    assert finding.offset is not None and finding.offset > 0
    data = call_stack_global("os", "system")
    stack = scan_bytes("p4.pkl", data).findings
    assert [(f.imports, f.offset) for f in stack] == [("os.system", data.index(b"\x93"))]
    assert (
        scan_bytes("w.txt", call_global("os", "system", 0)).entries[0].format.startswith("pickle")
    )
    nested = scan_bytes("m.zip", MALICIOUS["zip-in-zip.zip"]()).findings
    assert [f.path for f in nested] == ["m.zip!inner.zip!archive/data.pkl"]
    assert json.loads(json.dumps(report.as_dict()))["verdict"] == "fail"


def test_a_users_own_class_fails_until_allowed() -> None:
    data = pickle.dumps(UsersModel(), protocol=4)
    (finding,) = scan_bytes("model.pkl", data).findings
    assert finding.imports == f"{__name__}.UsersModel"
    assert f"{__name__}:UsersModel" in finding.message and "--allow" in finding.message
    trusted = DEFAULT_ALLOWLIST.extended(Allowlist.from_text(f"{__name__}:UsersModel\n"))
    assert scan_bytes("model.pkl", data, trusted).verdict == "pass"


def test_allowlist_text_and_what_it_can_never_allow() -> None:
    entries = Allowlist.from_text("# ours\nacme.models:Churn\nacme.layers:*  # every public name\n")
    assert entries.permits("acme.models", "Churn")
    assert not entries.permits("acme.models", "Other")
    assert entries.permits("acme.layers", "Dense")
    assert not entries.permits("acme.layers", "_private")
    assert not entries.permits("acme.layers", "Dense.__init__.__globals__")  # no attribute walks
    assert not entries.permits("acme.layers.sub", "Dense")  # exactly that module
    for line in ("os:system", "builtins:eval", "builtins:*", "subprocess.x:*", "numpy:testing.x"):
        with pytest.raises(InvalidInput, match="never"):
            Allowlist.from_text(line)
    for line in ("no-colon", "bad module:Name", "mod:not a name"):
        with pytest.raises(InvalidInput):
            Allowlist.from_text(line)
    for module, name in (
        ("builtins", "getattr"),
        ("builtins", "set.__init__"),
        ("sys", "modules"),
        ("types", "FunctionType"),
        ("codecs", "encode"),
        ("shutil", "rmtree"),
        ("socket", "socket"),
        ("pty", "spawn"),
        ("posix", "system"),
        ("nt", "system"),
        ("numpy.distutils", "exec_command"),
    ):
        assert not DEFAULT_ALLOWLIST.permits(module, name), (module, name)
    assert DEFAULT_ALLOWLIST.permits("_codecs", "encode")  # protocol 2 rebuilds bytes with it
    assert DEFAULT_ALLOWLIST.permits("sklearn.ensemble._forest", "RandomForestClassifier")


def test_caps_fail_closed() -> None:
    many = zipped({f"m{i}.txt": b"x" for i in range(5)})
    assert "too_many_members" in {
        f.reason for f in scan_bytes("many.zip", many, limits=Limits(members=3)).findings
    }
    bomb = gzip.compress(b"\x00" * (1 << 20))
    assert "too_large" in {
        f.reason for f in scan_bytes("bomb.gz", bomb, limits=Limits(inflated=1000)).findings
    }
    archive = zipped({"a.pkl": pickle.dumps([1]), "b.pkl": pickle.dumps([2])})
    duplicated = archive.replace(b"b.pkl", b"a.pkl")
    assert "duplicate_member" in {f.reason for f in scan_bytes("d.zip", duplicated).findings}
    encrypted = bytearray(zipped({"a.pkl": pickle.dumps([1])}))
    for signature in (b"PK\x03\x04", b"PK\x01\x02"):  # the encrypted flag in both headers
        at = encrypted.index(signature) + (6 if signature == b"PK\x03\x04" else 8)
        encrypted[at] |= 0x01
    assert "encrypted_member" in {f.reason for f in scan_bytes("e.zip", bytes(encrypted)).findings}


def test_formats_are_told_by_their_bytes(clean: dict[str, Path]) -> None:
    formats = {name: scan_path(path).entries[0] for name, path in clean.items()}
    assert formats["floats.npy"].verdict == "safe"
    assert formats["xgb.json"].format == "xgboost json"
    assert formats["xgb.ubj"].format == "xgboost ubj"
    assert formats["logistic.joblib.gz"].format == "gzip"
    assert formats["pytorch-style.pt"].format == "pytorch zip"
    if "w.safetensors" in formats:
        assert formats["w.safetensors"].format == "safetensors"
    if "lgbm.txt" in formats:
        assert formats["lgbm.txt"].format == "lightgbm text"
    if "identity.onnx" in formats:
        assert formats["identity.onnx"].format == "onnx"
    assert formats["logistic.onnx"].format == "onnx"
    assert formats["external.onnx"].note == "external data: external.weights"
    assert formats["log1p-pipeline.skops"].format == "skops"
    unknown = scan_bytes("blob.bin", bytes(range(256)) * 4)
    assert unknown.verdict == "pass" and unknown.entries[0].verdict == "unknown"
    lying = struct.pack("<Q", 20) + b'{"w":{"dtype":"F32","shape":[9],"data_offsets":[0,36]}}'
    assert scan_bytes("w.safetensors", lying.ljust(28 + 36, b" ")).entries[0].format != (
        "safetensors"
    )


@pytest.mark.parametrize(
    ("location", "escapes"),
    [
        ("weights.bin", False),
        ("sub/weights.bin", False),
        ("sub/../weights.bin", False),
        ("../weights.bin", True),
        ("sub/../../weights.bin", True),
        ("/etc/passwd", True),
        ("C:\\weights.bin", True),
        ("..\\weights.bin", True),
    ],
)
def test_onnx_external_data_may_not_leave_the_models_directory(
    location: str, escapes: bool
) -> None:
    assert onnx_model.escapes(location) is escapes
    verdict = scan_bytes("model.onnx", external_data(location)).verdict
    assert verdict == ("fail" if escapes else "pass")


def test_onnx_bytes_that_do_not_parse_fail_closed() -> None:
    for junk in (b"\x08", b"\x08\x07" + bytes(range(256)), b"\x08\x01\x3a\xff\xff\xff\xff\x0f"):
        (finding,) = scan_bytes("model.onnx", junk).findings
        assert finding.reason == "malformed_onnx", junk


def test_torch_files_when_torch_is_installed(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    module = torch.nn.Linear(2, 1)
    torch.save(module.state_dict(), tmp_path / "state.pt")
    assert scan_path(tmp_path / "state.pt").verdict == "pass"
    torch.save(_TorchModel(torch), tmp_path / "module.pt")
    report = scan_path(tmp_path / "module.pt")
    assert report.verdict == "fail"
    assert any("_TorchModel" in (f.imports or "") for f in report.findings)


def _TorchModel(torch: Any) -> Any:
    class _TorchModel(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

    return _TorchModel()


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_scan_fails_names_the_file_and_import(tmp_path: Path, clean: dict[str, Path]) -> None:
    (tmp_path / "good.joblib").write_bytes(clean["logistic.joblib"].read_bytes())
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "weights.safetensors").write_bytes(evil(4))
    runner = CliRunner()
    env = {"COLUMNS": "200", "TERM": "dumb", "MODELYARD_SCAN_ALLOW": None}
    result = runner.invoke(app, ["scan", str(tmp_path)], env=env)
    assert result.exit_code == 1, result.output
    assert "weights.safetensors" in result.output and "system" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["scan", str(tmp_path), "--json"], env=env)
    report = json.loads(result.stdout)
    assert result.exit_code == 1 and report["verdict"] == "fail"
    assert {f["reason"] for f in report["findings"]} == {"import_not_allowed"}
    assert {Path(f["path"]).name for f in report["files"]} == {"good.joblib", "weights.safetensors"}
    (tmp_path / "sub" / "weights.safetensors").unlink()
    assert runner.invoke(app, ["scan", str(tmp_path)], env=env).exit_code == 0


def test_cli_scan_a_registered_version_its_files_and_attachments(
    tmp_path: Path, clean: dict[str, Path]
) -> None:
    good = tmp_path / "model.joblib"
    good.write_bytes(clean["logistic.joblib"].read_bytes())
    report = tmp_path / "report.pkl"
    report.write_bytes(evil(2))  # evidence is a file someone will open too
    with modelyard.connect(tmp_path / "data") as reg:
        reg.register("churn", good, source=None)
        reg.register("churn", good, source=None)
        reg.attach("churn/2", report)
    runner = CliRunner()
    env = {"COLUMNS": "200", "TERM": "dumb", "MODELYARD_SCAN_ALLOW": None}
    registry = ["--registry", str(tmp_path / "data")]
    clean_one = runner.invoke(app, ["scan", "--version", "churn/1", "--json", *registry], env=env)
    assert clean_one.exit_code == 0, clean_one.output
    assert [f["path"] for f in json.loads(clean_one.stdout)["files"]] == ["churn/1:model.joblib"]
    both = runner.invoke(
        app, ["scan", "--version", "churn/1", "--version", "churn@latest", *registry], env=env
    )
    assert both.exit_code == 1, both.output
    assert "churn/2:attachments/report.pkl" in both.output and "system" in both.output
    nothing = runner.invoke(app, ["scan"], env=env)
    assert nothing.exit_code == 1 and "--version REF" in nothing.output


def test_cli_scan_allowlist_file_from_the_option_or_the_environment(tmp_path: Path) -> None:
    model = tmp_path / "model.pkl"
    model.write_bytes(pickle.dumps(UsersModel()))
    allow = tmp_path / "allow.txt"
    allow.write_text(f"{__name__}:UsersModel\n")
    runner = CliRunner()
    env = {"MODELYARD_SCAN_ALLOW": None}
    assert runner.invoke(app, ["scan", str(model)], env=env).exit_code == 1
    assert runner.invoke(app, ["scan", str(model), "--allow", str(allow)], env=env).exit_code == 0
    assert (
        runner.invoke(app, ["scan", str(model)], env={"MODELYARD_SCAN_ALLOW": str(allow)}).exit_code
        == 0
    )
    allow.write_text("os:system\n")
    refused = runner.invoke(app, ["scan", str(model), "--allow", str(allow)], env=env)
    assert refused.exit_code == 1 and "never be allowed" in refused.output


def test_reports_merge_in_order() -> None:
    first = scan_bytes("a.json", b"{}")
    both = first.merged(scan_bytes("b.pkl", evil()))
    assert isinstance(both, ScanReport)
    assert [e.path for e in both.entries] == ["a.json", "b.pkl"] and both.verdict == "fail"


@pytest.mark.parametrize("length", [0, 255, 256, 257, 100_000])
def test_text_lines_of_any_length_are_read_whole(length: int) -> None:
    """Protocol 0 reads names and strings to a newline, searched for in growing chunks:
    a line just under, at and over a chunk's end reads as the same line."""
    padding = "x" * length
    stream = f"(S'{padding}'\np0\ncos\nsystem\np1\n(g0\ntp2\nRp3\n.".encode()
    report = scan_bytes("model.pkl", stream)
    [finding] = report.findings
    assert (finding.imports, finding.offset) == ("os.system", length + 8)


# -- a file judged by its head (a blob in a bucket, not fetched whole) --------------------------

HEAD = HEAD_BYTES  # what the server fetches first of a blob in a bucket


def judged_by_their_heads() -> dict[str, bytes]:
    """Big files of the formats whose first bytes decide: raw weights, text, an image,
    safetensors."""
    rng = random.Random(16)
    header = json.dumps({"w": {"dtype": "F32", "shape": [HEAD], "data_offsets": [0, 4 * HEAD]}})
    return {
        "weights.bin": rng.randbytes(3 * HEAD),
        "table.csv": b"a,b\n" + b"1,2\n" * HEAD,
        "plot.png": b"\x89PNG\r\n\x1a\n" + rng.randbytes(2 * HEAD),
        "w.safetensors": struct.pack("<Q", len(header)) + header.encode() + bytes(4 * HEAD),
    }


def hidden_past_the_head() -> dict[str, bytes]:
    """Magicless pickles whose import comes after the first MiB: past a long string, and
    past a joblib array the reading skips over (joblib's stream without its PROTO)."""
    buffer = io.BytesIO()
    joblib.dump([np.zeros(HEAD // 4), Payload(os.system, "echo")], buffer)
    long_string = "(S'" + "x" * 2 * HEAD + "'\np0\ncos\nsystem\np1\n(g0\ntp2\nRp3\n."
    return {"array.joblib": buffer.getvalue()[2:], "string.pkl": long_string.encode()}


@pytest.mark.parametrize("name", sorted(judged_by_their_heads()))
def test_a_head_decides_text_images_safetensors_and_raw_weights(name: str) -> None:
    data = judged_by_their_heads()[name]
    decided = scan_head(name, memoryview(data[:HEAD]), len(data))
    assert decided is not None and decided == scan_bytes(name, data)
    assert decided.verdict == "pass"


@pytest.mark.parametrize("name", sorted(hidden_past_the_head()))
def test_an_import_past_the_head_is_found_by_reading_the_whole_file(name: str) -> None:
    """The attacker's files: harmless for a MiB, os.system after it."""
    data = hidden_past_the_head()[name]
    assert scan_head(name, memoryview(data[:HEAD]), len(data)) is None
    report = scan_bytes(name, data)
    imports = {f.imports for f in report.findings}
    assert report.verdict == "fail" and imports & {"os.system", "posix.system"}, imports


def test_a_head_answers_as_the_whole_file_would_or_not_at_all(clean: dict[str, Path]) -> None:
    """Every file of the corpus, malicious and clean, cut at several lengths: whatever
    scan_head decides from the cut is the whole file's report."""
    files = {name: build() for name, build in MALICIOUS.items()}
    files |= {name: path.read_bytes() for name, path in clean.items()}
    files |= judged_by_their_heads() | hidden_past_the_head()
    decided = 0
    for name, data in files.items():
        whole = scan_bytes(name, data)
        for cut in {1 << 15, 1 << 16, (1 << 16) + 7, HEAD, len(data) - 1, len(data)}:
            if 0 <= cut <= len(data):
                found = scan_head(name, memoryview(data[:cut]), len(data))
                assert found is None or found == whole, (name, cut)
                decided += found is not None and cut < len(data)
    assert decided >= len(judged_by_their_heads())
