"""Model files scanned without loading them: allowlist first, failing closed.

A pickle runs whatever it imports when loaded, and denylists (picklescan's) keep being
bypassed, so a pickle passes only when every global it names is on an allowlist of known
constructors; anything the scan cannot follow (a truncated stream, a bad CRC, an
encrypted member, an archive nested too deep) fails. Formats are told by their bytes,
never by the file's name: a pickle saved as ``model.safetensors`` is still a pickle.

``scan_view`` works on a buffer, so a large file is never copied whole into memory: the
server hands it a blob's memory map (service/scans.py), and ``scan_path``, the CLI's entry
point and the one read this module does, maps the file it is given.
"""

from __future__ import annotations

import ast
import bz2
import functools
import hashlib
import json
import lzma
import mmap
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from modelyard.domain import onnx_model, pickles
from modelyard.domain.errors import InvalidInput

Verdict = Literal["pass", "safe", "unknown", "fail"]
# Raised whenever a change to this module can change a verdict: stored verdicts reached by
# an older scanner are then stale, and the server scans their versions again.
SCANNER_VERSION = 3  # 2: ONNX and skops read deeply; 3: random bytes are no pickle
MAX_STORED_ENTRIES = 1000
MAX_STORED_FINDINGS = 200

# -- the allowlist ------------------------------------------------------------------------------

# Never allowed, whatever an allowlist file says: modules (and everything under them) and
# builtins that run code, touch files, processes or the network, or reach any other global.
FORBIDDEN_MODULES = frozenset(
    {
        *("os", "posix", "nt", "subprocess", "pty", "socket", "shutil", "sys", "signal"),
        *("pip", "pkgutil", "importlib", "runpy", "zipimport", "types", "codecs", "io", "_io"),
        *("pickle", "_pickle", "marshal", "ctypes", "multiprocessing", "threading", "asyncio"),
        *("operator", "functools", "code", "pdb", "webbrowser", "tempfile", "pathlib", "glob"),
        *("urllib", "http", "ftplib", "smtplib", "requests", "httpx", "inspect", "gc", "ast"),
        *("numpy.testing", "numpy.f2py", "numpy.distutils", "numpy.ctypeslib", "numpy.lib"),
        *("torch._dynamo", "torch._inductor", "torch.hub", "torch.utils", "torch.serialization"),
        *("torch.storage", "torch.jit", "torch.package", "torch.ops", "torch._ops"),
    }
)
FORBIDDEN_BUILTINS = frozenset(
    {
        *("eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "delattr"),
        *("globals", "locals", "vars", "input", "breakpoint", "help", "exit", "quit", "type"),
        *("memoryview", "super", "classmethod", "staticmethod", "property", "object"),
    }
)
_DUNDER = re.compile(r"__\w+__\Z")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def forbidden(module: str, name: str) -> bool:
    """Whether ``module``/``name`` is out of any allowlist's reach. A dotted name is an
    attribute chain (protocol 4 resolves ``os`` + ``path.join`` as os.path.join), so the
    whole path counts, and no segment may be a dunder (``__globals__``, ``__builtins__``)."""
    path = f"{module}.{name}"
    if any(path == m or path.startswith(m + ".") for m in FORBIDDEN_MODULES):
        return True
    if module == "builtins" and ("." in name or name in FORBIDDEN_BUILTINS):
        return True
    return any(_DUNDER.match(part) for part in path.split("."))


@dataclass(frozen=True)
class Family:
    """Classes anywhere under a package, e.g. sklearn's estimators in their private
    submodules (sklearn.linear_model._logistic.LogisticRegression): only public
    CamelCase names, nothing dotted, and no module path with "test" in it."""

    package: str

    def covers(self, module: str, name: str) -> bool:
        inside = module == self.package or module.startswith(self.package + ".")
        return (
            inside
            and "test" not in module.lower()
            and _IDENTIFIER.match(name) is not None
            and name[0].isupper()
        )


@dataclass(frozen=True)
class Allowlist:
    """The globals a pickle may import: exact (module, name) pairs, modules whose every
    public undotted name is allowed (``module:*``, only where a caller opts in), and the
    built-in families. Nothing ``forbidden`` passes, whatever the entries say."""

    names: frozenset[tuple[str, str]] = frozenset()
    modules: frozenset[str] = frozenset()
    families: tuple[Family, ...] = ()

    def permits(self, module: str, name: str) -> bool:
        if forbidden(module, name):
            return False
        if (module, name) in self.names:
            return True
        public = _IDENTIFIER.match(name) is not None and not name.startswith("_")
        if public and module in self.modules:
            return True
        return any(family.covers(module, name) for family in self.families)

    @functools.cached_property
    def fingerprint(self) -> str:
        """What a verdict was reached under: this allowlist and the scanner's own rules
        (``SCANNER_VERSION``), so a change to either shows which verdicts are stale."""
        canonical = json.dumps(
            {
                "scanner": SCANNER_VERSION,
                "names": sorted(map(list, self.names)),
                "modules": sorted(self.modules),
                "families": sorted(f.package for f in self.families),
            }
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def extended(self, other: Allowlist) -> Allowlist:
        return Allowlist(
            self.names | other.names, self.modules | other.modules, self.families + other.families
        )

    @classmethod
    def from_text(cls, text: str, source: str = "allowlist") -> Allowlist:
        """Lines of ``module.sub:Name`` or ``module.sub:*``; ``#`` starts a comment."""
        names: set[tuple[str, str]] = set()
        modules: set[str] = set()
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            module, sep, name = line.partition(":")
            where = f"{source} line {number}: {line!r}"
            if not sep or not pickles.DOTTED.match(module):
                raise InvalidInput(f"{where}: write module.sub:Name or module.sub:*")
            if name == "*":
                if module == "builtins" or forbidden(module, "*"):
                    raise InvalidInput(f"{where}: {module} can never be allowed")
                modules.add(module)
            elif not pickles.DOTTED.match(name):
                raise InvalidInput(f"{where}: {name!r} is not a Python name")
            elif forbidden(module, name):
                raise InvalidInput(f"{where}: {module}.{name} can never be allowed")
            else:
                names.add((module, name))
        return cls(frozenset(names), frozenset(modules))


def _pairs(module: str, *names: str) -> set[tuple[str, str]]:
    return {(module, name) for name in names}


_NUMPY_CORE = ("numpy.core", "numpy._core")  # numpy 1 and numpy 2 spell it differently
_TORCH_TYPES = ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte")
_TORCH_DTYPES = ("float16", "float32", "float64", "bfloat16", "int8", "int16", "int32")

DEFAULT_ALLOWLIST = Allowlist(
    names=frozenset(
        {
            *_pairs("numpy", "dtype", "ndarray"),
            *{
                (f"{core}.multiarray", n)
                for core in _NUMPY_CORE
                for n in ("_reconstruct", "scalar")
            },
            *{(f"{core}.numeric", "_frombuffer") for core in _NUMPY_CORE},
            *_pairs("numpy.random._pickle", "__randomstate_ctor", "__bit_generator_ctor"),
            *_pairs("numpy.random._pickle", "__generator_ctor"),
            *_pairs("numpy.random._mt19937", "MT19937"),
            *_pairs("numpy.random._pcg64", "PCG64", "PCG64DXSM"),
            *_pairs("collections", "OrderedDict", "defaultdict"),
            # Element-wise functions a model refers to (FunctionTransformer(np.log1p)):
            # called on arrays by the model, nothing when a file is loaded.
            *_pairs("numpy", "log", "log1p", "log2", "log10", "exp", "expm1", "sqrt"),
            *_pairs("numpy", "square", "abs", "absolute", "sign", "tanh", "reciprocal"),
            *_pairs("builtins", "set", "frozenset", "bytearray", "slice", "complex", "range"),
            # How protocol 2 rebuilds bytes (numpy arrays, any model pickled for Python 2
            # compatibility): str -> bytes through the codec registry, calls nothing else.
            ("_codecs", "encode"),
            *_pairs("torch._utils", "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter"),
            *_pairs("torch", "Size", "device", *_TORCH_DTYPES, "int64", "uint8", "bool"),
            *_pairs("torch", *(f"{t}Storage" for t in (*_TORCH_TYPES, "Bool"))),
            *_pairs("torch", "ComplexFloatStorage", "ComplexDoubleStorage"),
            *_pairs("joblib.numpy_pickle", "NumpyArrayWrapper"),
            *_pairs("xgboost.core", "Booster"),
            *_pairs("xgboost.sklearn", "XGBModel", "XGBClassifier", "XGBRegressor", "XGBRanker"),
            *_pairs("xgboost.sklearn", "XGBRFClassifier", "XGBRFRegressor"),
            *_pairs("lightgbm.basic", "Booster"),
            *_pairs("lightgbm.sklearn", "LGBMModel", "LGBMClassifier", "LGBMRegressor"),
            *_pairs("lightgbm.sklearn", "LGBMRanker"),
        }
    ),
    families=tuple(
        Family(f"sklearn.{package}")
        for package in (
            *("linear_model", "ensemble", "tree", "preprocessing", "pipeline", "compose", "svm"),
            *("neighbors", "naive_bayes", "cluster", "decomposition", "impute", "calibration"),
            *("feature_extraction", "feature_selection", "neural_network", "multiclass"),
            *("discriminant_analysis", "gaussian_process", "kernel_approximation", "isotonic"),
            *("multioutput", "cross_decomposition", "manifold", "mixture", "covariance"),
            *("semi_supervised", "dummy", "kernel_ridge", "random_projection", "_loss"),
        )
    ),
)

# -- the report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """Why a file fails: where (``model.pt!archive/data.pkl``, the opcode's byte offset),
    what it imports if anything, a stable ``reason`` code and a sentence for people."""

    path: str
    reason: str
    message: str
    offset: int | None = None
    imports: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "offset": self.offset,
            "import": self.imports,
            "reason": self.reason,
            "message": self.message,
        }


@dataclass(frozen=True)
class Entry:
    """One file or archive member: the format its bytes show and its verdict."""

    path: str
    format: str
    verdict: Verdict
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "verdict": self.verdict,
            "note": self.note,
        }


@dataclass(frozen=True)
class ScanReport:
    entries: tuple[Entry, ...]
    findings: tuple[Finding, ...]

    @property
    def verdict(self) -> Literal["pass", "fail"]:
        return "fail" if self.findings else "pass"

    def merged(self, other: ScanReport) -> ScanReport:
        return ScanReport(self.entries + other.entries, self.findings + other.findings)

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "files": [e.as_dict() for e in self.entries],
            "findings": [f.as_dict() for f in self.findings],
        }

    def stored(self, allow: Allowlist) -> dict[str, Any]:
        """The report as the registry keeps it with the version's scan check: capped (an
        archive of 10,000 members is one row, not a megabyte), with the totals, and the
        fingerprint of the allowlist the verdict was reached under."""
        return {
            **self.as_dict(),
            "files": [e.as_dict() for e in self.entries[:MAX_STORED_ENTRIES]],
            "findings": [f.as_dict() for f in self.findings[:MAX_STORED_FINDINGS]],
            "files_total": len(self.entries),
            "findings_total": len(self.findings),
            "allowlist": allow.fingerprint,
        }


# -- the report as stored, and findings an admin accepted --------------------------------------


def finding_key(finding: Mapping[str, Any]) -> str:
    """What an acceptance names of a stored finding: the file, the reason and the import
    (not the offset: accepting ``model.pkl`` importing ``acme.Model`` accepts each use)."""
    return f"{finding['path']}|{finding['reason']}|{finding.get('import') or ''}"


def open_findings(details: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The stored findings no acceptance covers."""
    accepted = {key for a in details.get("accepted", ()) for key in a["findings"]}
    return [f for f in details["findings"] if finding_key(f) not in accepted]


def stored_verdict(details: Mapping[str, Any]) -> Literal["pass", "fail"]:
    """Pass when every finding is accepted. A report whose findings were cut at
    ``MAX_STORED_FINDINGS`` fails: findings nobody can see cannot have been accepted."""
    truncated = details["findings_total"] > len(details["findings"])
    return "fail" if truncated or open_findings(details) else "pass"


def keep_acceptances(new: dict[str, Any], old: Mapping[str, Any] | None) -> dict[str, Any]:
    """A new report of a version (a re-scan, evidence attached) with the acceptances of
    its old one that still name a finding it has: an acceptance outlives a re-scan that
    finds the same thing, never one that finds something else."""
    keys = {finding_key(f) for f in new["findings"]}
    kept = []
    for acceptance in (old or {}).get("accepted", ()):
        still = [k for k in acceptance["findings"] if k in keys]
        if still:
            kept.append({**acceptance, "findings": still})
    return {**new, "accepted": kept} if kept else new


@dataclass(frozen=True)
class Limits:
    """Where the scan stops and fails rather than go on: nesting, members, inflated bytes."""

    depth: int = 4
    members: int = 10_000
    inflated: int = 1 << 30  # bytes decompressed in all, across every member and wrapper


# -- scanning -----------------------------------------------------------------------------------


def scan_view(
    name: str, view: memoryview, allow: Allowlist = DEFAULT_ALLOWLIST, limits: Limits = Limits()
) -> ScanReport:
    """Scan one file's bytes, given as a buffer (a memory map pages in only what is read)."""
    return _Scan(allow, limits).run(name, view)


def scan_head(
    name: str,
    head: memoryview,
    size: int,
    allow: Allowlist = DEFAULT_ALLOWLIST,
    limits: Limits = Limits(),
) -> ScanReport | None:
    """Scan a ``size``-byte file from ``head``, its first bytes, when they decide it; None
    when the whole file must be scanned.

    Most formats the scan knows need the whole file (archives, pickles, ONNX), but text,
    images, safetensors and bytes of no known format (raw weights) are judged by their
    first bytes: a server whose blobs are in a bucket need not fetch a gigabyte to learn
    that. The answer is the whole file's, never a guess: the same reading runs on the
    head, with every length the file's, and gives up at the first byte it lacks.
    """
    if len(head) >= size:
        return scan_view(name, head[:size], allow, limits)
    if len(head) < _TEXT_PROBE:
        return None  # the text probe alone reads this much
    try:
        return _Scan(allow, limits, size).run(name, head)
    except pickles.Beyond:
        return None


def scan_bytes(
    name: str, data: bytes, allow: Allowlist = DEFAULT_ALLOWLIST, limits: Limits = Limits()
) -> ScanReport:
    return scan_view(name, memoryview(data), allow, limits)


def scan_path(
    path: Path, allow: Allowlist = DEFAULT_ALLOWLIST, limits: Limits = Limits(), name: str = ""
) -> ScanReport:
    """Scan one file through a memory map: only the parts a scan needs are ever paged in."""
    label = name or str(path)
    with path.open("rb") as file:
        if path.stat().st_size == 0:
            return scan_view(label, memoryview(b""), allow, limits)
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                return scan_view(label, view, allow, limits)
            finally:
                view.release()


PICKLE_MAGIC_TORCH = 0x1950A86A20F9469CFC6C  # the first pickle of torch's legacy format
_LEGACY_TORCH_PICKLES = 5  # magic, protocol, sys info, the model, the storage keys
_TEXT_PROBE = 1 << 16


def _is_pickle_start(view: memoryview, at: int = 0) -> bool:
    return len(view) >= at + 2 and view[at] == 0x80 and 2 <= view[at + 1] <= 5


class _Scan:
    """One scan's state: the findings and entries so far, and what is left of the caps."""

    def __init__(self, allow: Allowlist, limits: Limits, size: int | None = None) -> None:
        self.allow = allow
        self.limits = limits
        self.size = size  # of the file, when the view given to run holds only its head
        self.members = 0
        self.inflated = 0
        self.entries: list[Entry] = []
        self.findings: list[Finding] = []

    def run(self, name: str, view: memoryview) -> ScanReport:
        self.scan(name, view, 0)
        return ScanReport(tuple(self.entries), tuple(self.findings))

    def fail(self, path: str, reason: str, message: str, offset: int | None = None) -> None:
        self.findings.append(Finding(path, reason, message, offset))

    def scan(self, path: str, view: memoryview, depth: int) -> None:
        """Tell the format by its bytes and scan it; record the entry with its verdict."""
        before = len(self.findings)
        index = len(self.entries)
        self.entries.append(Entry(path, "?", "unknown"))
        if depth > self.limits.depth:
            self.fail(
                path, "nesting_too_deep", f"containers nested deeper than {self.limits.depth}"
            )
            entry = Entry(path, "nested container", "fail")
        else:
            entry = self.dispatch(path, view, depth)
        if len(self.findings) > before:
            entry = replace(entry, verdict="fail")
        self.entries[index] = entry

    def dispatch(self, path: str, view: memoryview, depth: int) -> Entry:
        head = bytes(view[:16])
        # The file's size: the view may hold only its head (scan_head), read as if whole.
        size = self.size if depth == 0 and self.size is not None else len(view)
        parse = _read_whole(path, head, view)
        if parse is not None:
            if size > len(view):
                raise pickles.Beyond("this format is scanned whole")
            return parse(self, path, view, depth)
        safe = _safe_format(path, head, view, size)
        if safe:
            return Entry(path, safe, "safe")
        # Protocol 0 and 1 have no magic: a pickle if it imports.
        probe = pickles.read(view, size=size)
        if probe.evidence:
            self.report_stream(path, probe)
            return Entry(path, "pickle (protocol 0/1)", "pass")
        text = _text_format(head, view, size)
        if text:
            return Entry(path, text, "safe")
        return Entry(path, "unknown binary", "unknown", "not a format the scanner knows")

    # -- pickles -----------------------------------------------------------------------------

    def scan_pickles(self, path: str, view: memoryview) -> Entry:
        """Every pickle of the stream: torch's legacy format writes five before its raw
        storages, other writers (joblib, pickle.dump twice) one after another."""
        stream = pickles.read(view)
        self.report_stream(path, stream)
        legacy = isinstance(stream.result, int) and stream.result == PICKLE_MAGIC_TORCH
        count = 1
        while not stream.problems and _is_pickle_start(view, stream.end):
            if legacy and count == _LEGACY_TORCH_PICKLES:
                break
            stream = pickles.read(view, stream.end)
            self.report_stream(path, stream)
            count += 1
        kind = "torch legacy" if legacy else "pickle"
        return Entry(path, kind, "pass", f"{count} pickle(s)" if count > 1 else "")

    def report_stream(self, path: str, stream: pickles.Stream) -> None:
        seen: set[tuple[str, str]] = set()
        for item in stream.imports:
            key = (item.module, item.name)
            if key in seen or self.allow.permits(*key):
                continue
            seen.add(key)
            self.findings.append(
                Finding(
                    path,
                    "import_not_allowed",
                    _not_allowed(item.module, item.name, "loading calls it"),
                    item.offset,
                    item.dotted,
                )
            )
        for problem in stream.problems:
            self.fail(path, problem.reason, problem.message, problem.offset)

    # -- ONNX and skops: formats without code that still name what a loader reaches ---------

    def onnx(self, path: str, view: memoryview) -> Entry:
        """Safe unless it needs a custom-op library or points its data outside its folder."""
        try:
            facts = onnx_model.read(view)
        except onnx_model.MalformedOnnx as exc:
            self.fail(path, "malformed_onnx", f"the ONNX protobuf does not parse: {exc}")
            return Entry(path, "onnx", "fail")
        for domain in facts.custom_domains():
            self.fail(
                path,
                "custom_op_domain",
                f"uses operators of the domain {domain!r}, which no ONNX runtime implements:"
                " running it takes a custom-op library, code this scan has not seen",
            )
        for location in sorted(set(facts.locations)):
            if onnx_model.escapes(location):
                self.fail(
                    path,
                    "external_data_escapes",
                    f"its external data {location!r} lies outside the model's directory (an"
                    " absolute path, or one climbing out with ..): the loader would open it",
                )
        named = sorted(set(facts.locations))
        return Entry(path, "onnx", "safe", f"external data: {', '.join(named)}" if named else "")

    def skops(self, archive: zipfile.ZipFile, path: str, view: memoryview) -> bool:
        """Whether the zip is a skops file; if so, every type its schema names that skops
        would have to be told to trust must be on the allowlist (as a pickle's imports)."""
        where = f"{path}!schema.json"
        data = self.member_bytes(archive, archive.getinfo("schema.json"), where, view)
        try:
            schema = json.loads(bytes(data)) if data is not None else None
        except ValueError:
            return False  # the member's own scan said what it is
        if not (isinstance(schema, dict) and "__loader__" in schema and "protocol" in schema):
            return False
        try:
            named = sorted(set(_skops_types(schema)))
        except ValueError as exc:
            self.fail(where, "malformed_skops", str(exc))
            return True
        for module, name in named:
            if (module, name) not in _SKOPS_PLAIN and not self.allow.permits(module, name):
                message = _not_allowed(module, name, "skops loads it only when told to trust it")
                self.findings.append(
                    Finding(where, "import_not_allowed", message, None, f"{module}.{name}")
                )
        return True

    # -- numpy -------------------------------------------------------------------------------

    def npy(self, path: str, view: memoryview, depth: int) -> Entry:
        """A .npy header is a Python literal; an object dtype means a pickle follows it."""
        try:
            major = view[6]
            size_format, start = ("<H", 10) if major == 1 else ("<I", 12)
            (length,) = struct.unpack_from(size_format, view, 8)
            header = ast.literal_eval(bytes(view[start : start + length]).decode("latin-1"))
            descr = header["descr"]
        except (ValueError, SyntaxError, KeyError, TypeError, IndexError, struct.error) as exc:
            self.fail(path, "malformed_npy", f"the .npy header does not parse: {exc}")
            return Entry(path, "npy", "fail")
        if not _holds_objects(descr):
            return Entry(path, "npy", "safe")
        self.scan_pickles(path, view[start + length :])
        return Entry(path, "npy (object dtype: pickle)", "pass")

    # -- archives ----------------------------------------------------------------------------

    def zip(self, path: str, view: memoryview, depth: int) -> Entry:
        try:
            archive = zipfile.ZipFile(pickles.Reader(view))
        except (zipfile.BadZipFile, ValueError, OSError) as exc:
            self.fail(path, "malformed_archive", f"not a readable zip: {exc}")
            return Entry(path, "zip", "fail")
        with archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            names = [m.filename for m in members]
            for duplicate in sorted({n for n in names if names.count(n) > 1}):
                self.fail(f"{path}!{duplicate}", "duplicate_member", "two members share a name")
            storages = {n[: -len("data.pkl")] + "data/" for n in names if n.endswith("/data.pkl")}
            for member in members:
                self.members += 1
                if self.members > self.limits.members:
                    self.fail(path, "too_many_members", f"more than {self.limits.members} members")
                    break
                if not any(member.filename.startswith(s) for s in storages):
                    self.member(archive, member, f"{path}!{member.filename}", view, depth)
        kind = "pytorch zip" if storages else "zip"
        if not storages and "schema.json" in names and self.skops(archive, path, view):
            kind = "skops"
        return Entry(path, kind, "pass", f"{len(members)} member(s)")

    def member(
        self,
        archive: zipfile.ZipFile,
        member: zipfile.ZipInfo,
        path: str,
        view: memoryview,
        depth: int,
    ) -> None:
        """Every member but raw tensor storages is read, CRC checked and scanned: a
        protocol 0 or 1 pickle has no magic to tell it by, so a large member that shows no
        format may still be one (and a loader may unpickle a member by any name)."""
        if member.flag_bits & 0x1:
            self.fail(path, "encrypted_member", "an encrypted member cannot be inspected")
            return
        if member.compress_type not in _COMPRESSIONS:
            self.fail(path, "unsupported_compression", f"compression {member.compress_type}")
            return
        data = self.member_bytes(archive, member, path, view)
        if data is None:
            return
        if zlib.crc32(data) != member.CRC:
            self.fail(path, "crc_mismatch", "the member's CRC-32 does not match the directory")
            return
        self.scan(path, data, depth + 1)

    def member_bytes(
        self, archive: zipfile.ZipFile, member: zipfile.ZipInfo, path: str, view: memoryview
    ) -> memoryview | None:
        """A stored member is a view into the archive; a compressed one is inflated within
        the budget."""
        if member.compress_type == zipfile.ZIP_STORED:
            local = member.header_offset
            try:
                name_length, extra_length = struct.unpack_from("<HH", view, local + 26)
            except struct.error:
                name_length = extra_length = len(view)
            start = local + 30 + name_length + extra_length
            if start + member.compress_size > len(view) or member.compress_size != member.file_size:
                self.fail(path, "malformed_archive", "the member's data lies outside the archive")
                return None
            return view[start : start + member.compress_size]
        if self.inflated + member.file_size > self.limits.inflated:
            self.fail(path, "too_large", "inflating it would pass the scan's size cap")
            return None
        try:
            with archive.open(member) as handle:
                data = handle.read(self.limits.inflated - self.inflated + 1)
        except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, OSError, EOFError) as exc:
            reason = "crc_mismatch" if "CRC" in str(exc) else "malformed_archive"
            self.fail(path, reason, f"the member does not inflate: {exc}")
            return None
        self.inflated += len(data)
        return memoryview(data)

    def inflate(
        self,
        path: str,
        view: memoryview,
        depth: int,
        kind: str,
        decompressor: Callable[[], Any],
    ) -> Entry:
        """A compressed wrapper (gzip, bz2, xz, lzma, zlib: joblib's compressors),
        inflated within the budget and its content scanned as ``path!inflated``."""
        room = self.limits.inflated - self.inflated
        try:
            data = _inflate(view, decompressor, room)
        except _TooLarge:
            self.fail(path, "too_large", f"inflates past the scan's cap of {room} bytes")
            return Entry(path, kind, "fail")
        except EOFError:
            self.fail(path, "truncated", f"the {kind} stream ends early")
            return Entry(path, kind, "fail")
        except (OSError, zlib.error, lzma.LZMAError, ValueError) as exc:
            self.fail(path, "malformed_archive", f"the {kind} stream does not inflate: {exc}")
            return Entry(path, kind, "fail")
        self.inflated += len(data)
        self.scan(f"{path}!inflated", memoryview(data), depth + 1)
        return Entry(path, kind, "pass")

    def unsupported(self, path: str, view: memoryview, depth: int) -> Entry:
        self.fail(path, "unsupported_compression", "a compression the scanner cannot open")
        return Entry(path, "compressed (unsupported)", "fail")


class _TooLarge(Exception):
    pass


_CHUNK = 1 << 16


def _inflate(view: memoryview, make: Callable[[], Any], room: int) -> bytes:
    """Every stream of ``view`` inflated (gzip and bz2 may hold several), never more than
    ``room`` bytes: zlib keeps input it had no room for in unconsumed_tail, bz2 and lzma
    keep output until asked again (needs_input false)."""
    out = bytearray()
    pos = 0
    engine = make()
    while True:
        if engine.eof:
            pos -= len(engine.unused_data)
            if pos >= len(view):
                return bytes(out)
            engine = make()
        tail = getattr(engine, "unconsumed_tail", b"")
        if tail or not getattr(engine, "needs_input", True):
            data: bytes | memoryview = tail
        elif pos < len(view):
            data = view[pos : pos + _CHUNK]
            pos += len(data)
        else:
            raise EOFError
        out += engine.decompress(data, room - len(out) + 1)
        if len(out) > room:
            raise _TooLarge


def _gzip_stream() -> Any:
    return zlib.decompressobj(16 + zlib.MAX_WBITS)


def _zlib_stream() -> Any:
    return zlib.decompressobj()


def _inflater(kind: str, decompressor: Callable[[], Any]) -> Callable[..., Entry]:
    def container(scan: _Scan, path: str, view: memoryview, depth: int) -> Entry:
        return scan.inflate(path, view, depth, kind, decompressor)

    return container


_Parser = Callable[[_Scan, str, memoryview, int], Entry]
_CONTAINERS: tuple[tuple[bytes, _Parser], ...] = (
    (b"PK\x03\x04", _Scan.zip),
    (b"PK\x05\x06", _Scan.zip),  # an empty zip
    (b"\x93NUMPY", _Scan.npy),
    (b"\x1f\x8b", _inflater("gzip", _gzip_stream)),
    (b"BZh", _inflater("bz2", bz2.BZ2Decompressor)),
    (b"\xfd7zXZ\x00", _inflater("xz", lzma.LZMADecompressor)),
    (b"\x5d\x00\x00", _inflater("lzma", lzma.LZMADecompressor)),
    (b"\x04\x22\x4d\x18", _Scan.unsupported),  # lz4 frame
    (b"ZF", _Scan.unsupported),  # joblib's pre-0.10 zlib files
)
_ZLIB = _inflater("zlib", _zlib_stream)


def _read_whole(path: str, head: bytes, view: memoryview) -> _Parser | None:
    """How to read a file of a format that is read through to its end, told by its first
    bytes; None for the formats its head decides."""
    for magic, container in _CONTAINERS:
        if head.startswith(magic):
            return container
    if _is_zlib(head):
        return _ZLIB
    if _is_pickle_start(view):
        return lambda scan, path, view, depth: scan.scan_pickles(path, view)
    # ONNX is protobuf, which has no magic: the extension and a first field of ir_version.
    if path.lower().endswith(".onnx") and head[:1] == b"\x08":
        return lambda scan, path, view, depth: scan.onnx(path, view)
    return None


_COMPRESSIONS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


def _is_zlib(head: bytes) -> bool:
    """zlib's two-byte header (joblib's 'zlib' compressor), checksum included."""
    return len(head) >= 2 and head[0] == 0x78 and (head[0] << 8 | head[1]) % 31 == 0


def _holds_objects(descr: Any) -> bool:
    """Whether a .npy descr has an object field anywhere (numpy then pickles the data)."""
    if isinstance(descr, str):
        return descr.lstrip("<>|=").startswith("O")
    if isinstance(descr, list | tuple):
        return any(_holds_objects(part) for part in descr)
    return True  # not a descr numpy writes: assume the worst


_SAFE_MAGICS = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
)


def _safe_format(path: str, head: bytes, view: memoryview, size: int) -> str:
    """Formats that hold no code by construction, each checked by its bytes; ``view`` may
    hold only the first bytes of the ``size``-byte file."""
    for magic, kind in _SAFE_MAGICS:
        if head.startswith(magic):
            return kind
    if _safetensors(view, size):
        return "safetensors"
    lower = path.lower()
    # UBJSON: an object opening; no pickle opcode is "{".
    if lower.endswith(".ubj") and head[:1] == b"{":
        return "xgboost ubj"
    return ""


def _safetensors(view: memoryview, size: int) -> bool:
    """An 8-byte little-endian length, a JSON header, and every tensor inside the file."""
    if size < 10 or view[8] != ord("{"):
        return False
    (length,) = struct.unpack_from("<Q", view)
    if length > size - 8 or length > 100 << 20:
        return False
    if 8 + length > len(view):
        raise pickles.Beyond("the safetensors header runs past the head")
    try:
        header = json.loads(bytes(view[8 : 8 + length]))
    except ValueError:
        return False
    data = size - 8 - length
    tensors = (
        [v for k, v in header.items() if k != "__metadata__"] if isinstance(header, dict) else []
    )
    return isinstance(header, dict) and all(_within(t, data) for t in tensors)


def _within(tensor: Any, size: int) -> bool:
    offsets = tensor.get("data_offsets") if isinstance(tensor, dict) else None
    return (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) for o in offsets)
        and 0 <= offsets[0] <= offsets[1] <= size
    )


def _text_format(head: bytes, view: memoryview, size: int) -> str:
    """Text (JSON, CSV, YAML, XGBoost JSON, LightGBM's model text) by its first 64 KiB."""
    sample = bytes(view[:_TEXT_PROBE])
    if b"\x00" in sample:
        return ""
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 4 or size <= _TEXT_PROBE:
            return ""  # not a character cut in half by the sample's end
    if head.startswith(b"tree\nversion="):
        return "lightgbm text"
    if head.startswith(b'{"learner"'):
        return "xgboost json"
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    return "text"


def _not_allowed(module: str, name: str, why: str) -> str:
    if forbidden(module, name):
        return f"imports {module}.{name}, which can run code or reach what does: never allowed"
    return (
        f"imports {module}.{name}, which is not on the allowlist ({why}); if you"
        f" trust it, add the line {module}:{name} to a file named by --allow or"
        " MODELYARD_SCAN_ALLOW"
    )


# What a skops schema names for its plain values: skops rebuilds these without trusting.
_SKOPS_PLAIN = frozenset(
    {
        *_pairs("builtins", "dict", "list", "tuple", "str", "int", "float", "bool", "bytes"),
        *_pairs("builtins", "NoneType", "complex"),
        *_pairs("numpy", "ndarray", "dtype", "bool_", "str_", "bytes_"),
        *_pairs(
            "numpy", *(f"{kind}{bits}" for kind in ("int", "uint") for bits in (8, 16, 32, 64))
        ),
        *_pairs("numpy", "float16", "float32", "float64", "complex64", "complex128"),
        *_pairs("numpy.random.mtrand", "RandomState"),
        *_pairs("numpy.random._generator", "Generator"),
    }
)


def _skops_types(schema: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Every (module, name) the nodes of a skops schema name (a node has a loader)."""
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__loader__" in node:
                module, name = node.get("__module__"), node.get("__class__")
                if not (isinstance(module, str) and isinstance(name, str)):
                    raise ValueError("a schema node names no module and class")
                yield module, name
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
