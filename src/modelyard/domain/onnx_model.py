"""What an ONNX model asks of whoever loads it, read from its protobuf without the onnx
package (which the server does not install): the operator domains its nodes use, the
domains of the functions it defines itself, and where its external data lies.

An ONNX file holds no code, but two things in it reach outside: a node of a domain no
runtime implements needs a custom-op library (a shared object loaded into the process),
and a tensor's external data names a file the loader opens, which onnx itself refuses
when the path is absolute or climbs out with ``..`` (CVE-2024-27318). The file is
untrusted, so the reader fails on anything it cannot follow rather than guess.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field

# The domains of ONNX itself and those ONNX Runtime implements without a plug-in.
STANDARD_DOMAINS = frozenset(
    {
        *("", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training"),
        *("com.microsoft", "com.microsoft.nchwc", "com.microsoft.experimental"),
        "com.ms.internal.nhwc",
    }
)
MAX_DEPTH = 32  # graphs nested in node attributes (If, Loop, Scan), and functions

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


class MalformedOnnx(ValueError):
    """The bytes are not a protobuf an ONNX runtime would load."""


@dataclass
class OnnxFacts:
    domains: set[str] = field(default_factory=set)  # used by nodes or imported by opsets
    functions: set[str] = field(default_factory=set)  # of the model's own functions
    locations: list[str] = field(default_factory=list)  # of tensors' external data

    def custom_domains(self) -> list[str]:
        """The domains a runtime would need a custom-op library for."""
        return sorted(self.domains - STANDARD_DOMAINS - self.functions)


def escapes(location: str) -> bool:
    """Whether an external-data location can name a file outside the model's directory:
    absolute (POSIX or Windows), or climbing out with ``..`` (either separator)."""
    plain = location.replace("\\", "/")
    if plain.startswith("/") or (len(plain) > 1 and plain[1] == ":") or "\x00" in plain:
        return True
    return posixpath.normpath(plain).split("/")[0] == ".."


def read(view: memoryview) -> OnnxFacts:
    """The facts of a serialized ``ModelProto``; ``MalformedOnnx`` if it does not parse."""
    facts = OnnxFacts()
    _Reader(view, facts).model(0, len(view))
    return facts


class _Reader:
    def __init__(self, view: memoryview, facts: OnnxFacts) -> None:
        self.view = view
        self.facts = facts

    # -- the wire format -------------------------------------------------------------------

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            if pos >= end or shift > 63:
                raise MalformedOnnx("a number runs past its message")
            byte = self.view[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value, pos
            shift += 7

    def fields(self, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """(field number, wire type, value or start, end) of each field in a message; a
        length-delimited field is skipped without reading it (a tensor's raw data)."""
        pos = start
        while pos < end:
            key, pos = self.varint(pos, end)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise MalformedOnnx(f"field number 0 at byte {pos}")
            if wire == _VARINT:
                value, pos = self.varint(pos, end)
                yield number, wire, value, pos
            elif wire == _BYTES:
                length, pos = self.varint(pos, end)
                if pos + length > end:
                    raise MalformedOnnx(f"a field of {length} bytes runs past its message")
                yield number, wire, pos, pos + length
                pos += length
            elif wire in (_FIXED64, _FIXED32):
                pos += 8 if wire == _FIXED64 else 4
                if pos > end:
                    raise MalformedOnnx("a fixed-size field runs past its message")
                yield number, wire, 0, pos
            else:
                raise MalformedOnnx(f"wire type {wire} (groups are not ONNX) at byte {pos}")

    def messages(
        self, start: int, end: int, wanted: dict[int, str]
    ) -> Iterator[tuple[str, int, int]]:
        """The sub-messages of the wanted fields, each as (what it is, start, end)."""
        for number, wire, a, b in self.fields(start, end):
            kind = wanted.get(number)
            if kind is None:
                continue
            if wire != _BYTES:
                raise MalformedOnnx(f"field {number} ({kind}) is not a message")
            yield kind, a, b

    def text(self, start: int, end: int) -> str:
        try:
            return bytes(self.view[start:end]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedOnnx(f"a string is not UTF-8: {exc}") from None

    def string_field(self, start: int, end: int, number: int) -> str | None:
        found = None
        for n, wire, a, b in self.fields(start, end):
            if n == number and wire == _BYTES:
                found = self.text(a, b)
        return found

    # -- ONNX's messages (onnx.proto's field numbers) ----------------------------------------

    def model(self, start: int, end: int) -> None:
        if not any(n == 1 and w == _VARINT for n, w, _, _ in self.fields(start, end)):
            raise MalformedOnnx("no ir_version: not an ONNX model")
        wanted = {7: "graph", 8: "opset", 20: "training", 25: "function"}
        for kind, a, b in self.messages(start, end, wanted):
            if kind == "graph":
                self.graph(a, b, 1)
            elif kind == "opset":
                self.facts.domains.add(self.string_field(a, b, 1) or "")
            elif kind == "training":  # its initialization and algorithm graphs
                for _, c, d in self.messages(a, b, {1: "graph", 2: "graph"}):
                    self.graph(c, d, 1)
            else:
                self.function(a, b, 1)

    def function(self, start: int, end: int, depth: int) -> None:
        self.facts.functions.add(self.string_field(start, end, 10) or "")
        wanted = {7: "node", 9: "opset", 11: "attribute"}
        for kind, a, b in self.messages(start, end, wanted):
            if kind == "node":
                self.node(a, b, depth)
            elif kind == "opset":
                self.facts.domains.add(self.string_field(a, b, 1) or "")
            else:
                self.attribute(a, b, depth)

    def graph(self, start: int, end: int, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise MalformedOnnx(f"graphs nested deeper than {MAX_DEPTH}")
        wanted = {1: "node", 5: "tensor", 15: "sparse"}
        for kind, a, b in self.messages(start, end, wanted):
            if kind == "node":
                self.node(a, b, depth)
            elif kind == "tensor":
                self.tensor(a, b)
            else:
                self.sparse(a, b)

    def node(self, start: int, end: int, depth: int) -> None:
        self.facts.domains.add(self.string_field(start, end, 7) or "")
        for _, a, b in self.messages(start, end, {5: "attribute"}):
            self.attribute(a, b, depth)

    def attribute(self, start: int, end: int, depth: int) -> None:
        wanted = {5: "tensor", 10: "tensor", 6: "graph", 11: "graph", 22: "sparse", 23: "sparse"}
        for kind, a, b in self.messages(start, end, wanted):
            if kind == "graph":
                self.graph(a, b, depth + 1)
            elif kind == "tensor":
                self.tensor(a, b)
            else:
                self.sparse(a, b)

    def sparse(self, start: int, end: int) -> None:
        for _, a, b in self.messages(start, end, {1: "tensor", 2: "tensor"}):
            self.tensor(a, b)

    def tensor(self, start: int, end: int) -> None:
        for _, a, b in self.messages(start, end, {13: "external data"}):
            if self.string_field(a, b, 1) == "location":
                self.facts.locations.append(self.string_field(a, b, 2) or "")
