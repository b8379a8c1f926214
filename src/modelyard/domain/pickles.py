"""What a pickle stream would import, found without running it.

A pickle calls whatever its imports name when it is loaded, so this reads the opcodes
(``pickletools.genops``) and never ``pickle.load``: a small symbolic stack follows what
the unpickler would hold, enough to know the strings STACK_GLOBAL consumes (through the
memo too), and the shape of a joblib array whose raw bytes sit inside the stream.
Anything it cannot follow is a problem, so a caller can fail closed.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickletools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Opcodes whose argument is the string they push. STRING and BINSTRING push str too in
# Python 3 (decoded as ASCII by default), so they can feed STACK_GLOBAL.
_STRINGS = {
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
    "UNICODE",
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE8",
}
_INTS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"}
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GETS = {"GET", "BINGET", "LONG_BINGET"}
_EXTENSIONS = {"EXT1", "EXT2", "EXT4"}
DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
# Reads at least this long come back as views into the buffer, not copies.
_COPY_LIMIT = 1 << 16


@dataclass(frozen=True)
class Import:
    """A global the stream names: what ``find_class(module, name)`` would be asked for."""

    module: str
    name: str
    offset: int

    @property
    def dotted(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class Problem:
    """Something that makes the stream's effect unknowable; ``reason`` is a stable code."""

    reason: str
    offset: int
    message: str


@dataclass
class Stream:
    """One pickle read up to its STOP (or as far as it could be read)."""

    start: int
    end: int = 0
    imports: list[Import] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    result: Any = None  # the symbolic value STOP returns
    stopped: bool = False  # read to its STOP: a whole pickle

    @property
    def evidence(self) -> bool:
        """Whether bytes with no pickle magic are a pickle: they name an import (a text
        file that happens to parse is no pickle), or they are a whole pickle that reaches
        for the extension registry or imports what it cannot name. Random bytes (raw
        weights) meet an EXT or STACK_GLOBAL opcode before their first error in about 1.3%
        of files; the unpickler raises there, having imported nothing."""
        if any(DOTTED.match(i.module) and DOTTED.match(i.name) for i in self.imports):
            return True
        unknowable = ("unresolvable_import", "extension_registry")
        return self.stopped and any(p.reason in unknowable for p in self.problems)


class Beyond(Exception):
    """Raised by a ``Reader`` given only a file's first bytes when a read needs bytes
    after them: what was read so far cannot tell the verdict, so the whole file must."""


class Reader:
    """A seekable file over a buffer (bytes or an mmap), copying only small reads: what
    pickletools and zipfile read from without the whole file in memory.

    ``size``, when larger than the buffer, is the length of a file of which the buffer
    holds only the first bytes (a blob's head, fetched before the rest): every length and
    end is the file's, and a read past the buffer raises ``Beyond`` instead of returning
    short, so a reading that finishes gives what the whole file would have given.
    """

    def __init__(self, view: memoryview, size: int | None = None) -> None:
        self.view = view
        self.size = len(view) if size is None else size
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def read(self, size: int | None = -1) -> Any:
        end = self.size if size is None or size < 0 else min(self.size, self.pos + size)
        chunk = self._bytes(self.pos, end)
        self.pos = max(self.pos, end)
        return bytes(chunk) if len(chunk) < _COPY_LIMIT else chunk

    def readline(self, size: int | None = -1) -> bytes:
        """Up to and including the next newline, searched for in growing chunks: a file of
        random bytes (or a hostile one, a gigabyte without a newline) is read at C speed,
        not a Python loop a byte."""
        stop = self.size if size is None or size < 0 else min(self.size, self.pos + size)
        end, step = self.pos, 256
        while end < stop:
            chunk_end = min(stop, end + step)
            found = bytes(self.view[end : min(chunk_end, len(self.view))]).find(b"\n")
            if found != -1:
                end += found + 1
                break
            self._bytes(end, chunk_end)  # no newline in what is held: is there more?
            end, step = chunk_end, min(step * 2, 1 << 20)
        line = bytes(self.view[self.pos : end])
        self.pos = end
        return line

    def _bytes(self, start: int, end: int) -> memoryview:
        if end > len(self.view) and start < end:
            raise Beyond(f"bytes {len(self.view)}-{end} of {self.size} were not read")
        return self.view[start:end]


class _Mark:
    """Where MARK split the stack (the unpickler's metastack)."""


@dataclass
class Instance:
    """What REDUCE, NEWOBJ, OBJ or INST would build: the callable, its arguments, and the
    state BUILD gives it."""

    of: Any
    args: Any = None
    state: Any = None


class Opaque:
    """A value the scan does not follow (a float, bytes, a persistent id's object)."""


@dataclass(frozen=True)
class Global:
    module: str
    name: str


class _Halt(Exception):
    """Stop reading: what follows cannot be followed (with no message: already said)."""

    def __init__(self, reason: str = "", message: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _underflow() -> _Halt:
    return _Halt("malformed_pickle", "pops more than it pushed (the unpickler fails here)")


JOBLIB_ARRAY = Global("joblib.numpy_pickle", "NumpyArrayWrapper")


def read(view: memoryview, start: int = 0, depth: int = 0, size: int | None = None) -> Stream:
    """Follow the pickle that starts at ``start`` in ``view`` to its STOP. ``size``: of the
    file whose first bytes ``view`` holds (``Reader``); may raise ``Beyond``."""
    reader = Reader(view, size)
    reader.seek(start)
    return _Machine(reader, depth).run()


class _Machine:
    def __init__(self, reader: Reader, depth: int, stream: Stream | None = None) -> None:
        self.reader = reader
        self.depth = depth
        self.nested = stream is not None
        self.stream = stream or Stream(start=reader.tell())
        self.stopped = False
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.proto = 0

    def run(self) -> Stream:
        """Read to STOP; a problem that leaves the rest unknowable ends the reading."""
        stream = self.stream
        offset = stream.start
        try:
            for opcode, arg, pos in _genops(self.reader):
                offset = pos if pos is not None else offset
                self.step(opcode, arg, offset)
                if opcode.name == "STOP":
                    self.stopped = True
                    stream.stopped = stream.stopped or not self.nested
                    break
        except _Halt as halt:
            if halt.message:
                stream.problems.append(Problem(halt.reason, offset, halt.message))
        except (ValueError, KeyError, TypeError, IndexError, OverflowError) as exc:
            at_end = self.reader.tell() >= self.reader.size
            reason = "truncated" if at_end else "malformed_pickle"
            stream.problems.append(Problem(reason, offset, f"unreadable here: {exc}"))
        stream.end = self.reader.tell()
        return stream

    # -- the stack ---------------------------------------------------------------------------

    def pop(self) -> Any:
        if not self.stack:
            raise _underflow()
        return self.stack.pop()

    def pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise _underflow()
        items, self.stack = self.stack, self.metastack.pop()
        return items

    def step(self, opcode: pickletools.OpcodeInfo, arg: Any, offset: int) -> None:
        name = opcode.name
        if name in _STRINGS:
            self.stack.append(str(arg))
        elif name in _INTS:
            self.stack.append(int(arg))
        elif name in _PUTS:
            self.memo[int(arg)] = self.top()
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = self.top()
        elif name in _GETS:
            self.stack.append(self.memo[int(arg)])  # missing: KeyError, malformed
        elif name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            target = self.imported(module, attr, offset)
            self.stack.append(Instance(target, self.pop_mark()) if name == "INST" else target)
        elif name == "STACK_GLOBAL":
            attr, module = self.pop(), self.pop()
            if isinstance(module, str) and isinstance(attr, str):
                self.stack.append(self.imported(module, attr, offset))
            else:
                self.problem("unresolvable_import", offset, "STACK_GLOBAL of values not strings")
        elif name in _EXTENSIONS:
            self.problem(
                "extension_registry",
                offset,
                f"imports copyreg extension code {arg}, which only the loading process knows",
            )
        else:
            self.structure(name, opcode, arg)

    def structure(self, name: str, opcode: pickletools.OpcodeInfo, arg: Any) -> None:
        """Opcodes that build values; anything else by its declared stack effect."""
        stack = self.stack
        if name == "PROTO":
            self.proto = int(arg)
            if not 0 <= self.proto <= 5:
                raise ValueError(f"unsupported protocol {self.proto}")
        elif name == "MARK":
            self.metastack.append(stack)
            self.stack = []
        elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
            stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
        elif name in ("EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE"):
            stack.append({"EMPTY_DICT": dict, "EMPTY_LIST": list, "EMPTY_TUPLE": tuple}[name]())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            count = int(name[-1])
            items = [self.pop() for _ in range(count)][::-1]
            stack.append(tuple(items))
        elif name in ("TUPLE", "LIST"):
            items = self.pop_mark()
            self.stack.append(tuple(items) if name == "TUPLE" else items)
        elif name in ("DICT", "SETITEMS", "SETITEM"):
            items = self.pop_mark() if name != "SETITEM" else [self.pop(), self.pop()][::-1]
            target = {} if name == "DICT" else self.top()
            if isinstance(target, dict):
                for key, value in zip(items[::2], items[1::2], strict=False):
                    if isinstance(key, str | int | bool | None):
                        target[key] = value
            if name == "DICT":
                self.stack.append(target)
        elif name in ("REDUCE", "NEWOBJ"):
            args = self.pop()
            self.stack.append(Instance(self.pop(), args))
        elif name == "NEWOBJ_EX":
            self.pop()  # kwargs
            args = self.pop()
            self.stack.append(Instance(self.pop(), args))
        elif name == "OBJ":
            items = self.pop_mark()
            if not items:
                raise _underflow()
            self.stack.append(Instance(items[0], tuple(items[1:])))
        elif name == "BUILD":
            state = self.pop()
            target = self.top()
            if isinstance(target, Instance):
                target.state = state
                if target.of == JOBLIB_ARRAY:
                    self.skip_joblib_array(state)
        elif name == "STOP":
            result = self.pop()
            if not self.nested:
                self.stream.result = result
        elif name == "DUP":
            stack.append(self.top())
        else:
            self.generic(opcode)

    def generic(self, opcode: pickletools.OpcodeInfo) -> None:
        before = opcode.stack_before
        if pickletools.markobject in before:
            self.pop_mark()
            before = before[: before.index(pickletools.markobject)]
        for _ in before:
            self.pop()
        for _ in opcode.stack_after:
            self.stack.append(Opaque())

    def top(self) -> Any:
        if not self.stack:
            raise _underflow()
        return self.stack[-1]

    def problem(self, reason: str, offset: int, message: str) -> None:
        self.stream.problems.append(Problem(reason, offset, message))
        self.stack.append(Opaque())

    def imported(self, module: str, attr: str, offset: int) -> Global:
        if self.proto < 3:  # what the unpickler's fix_imports maps Python 2 names to
            module, attr = _compat_pickle.NAME_MAPPING.get((module, attr), (module, attr))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        self.stream.imports.append(Import(module, attr, offset))
        return Global(module, attr)

    # -- joblib ------------------------------------------------------------------------------

    def skip_joblib_array(self, state: Any) -> None:
        """Step over the array joblib wrote into the stream after a NumpyArrayWrapper: raw
        bytes (after a padding byte), or for object arrays a pickle of their own, read as
        part of this stream (its imports are this file's)."""
        size = _array_bytes(state)
        if size is None:
            raise _Halt("malformed_pickle", "a joblib array of unreadable size follows")
        if size < 0:
            if self.depth >= _MAX_NESTED:
                raise _Halt("nesting_too_deep", "object arrays nested too deep in a joblib file")
            inner = _Machine(self.reader, self.depth + 1, self.stream)
            inner.run()
            if not inner.stopped:
                raise _Halt()  # the inner reading said why
            return
        if state.get("numpy_array_alignment_bytes") is not None:
            padding = self.reader.read(1)
            if padding:
                self.reader.seek(padding[0], io.SEEK_CUR)
        end = self.reader.tell() + size
        if end > self.reader.size:
            raise _Halt("truncated", "the joblib array's data runs past the end")
        self.reader.seek(end)


_MAX_NESTED = 4


def _array_bytes(state: Any) -> int | None:
    """How many bytes of data a joblib array's state announces; -1 for an object array."""
    if not isinstance(state, dict):
        return None
    shape, dtype = state.get("shape"), state.get("dtype")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        return None
    if not (isinstance(dtype, Instance) and isinstance(dtype.args, tuple) and dtype.args):
        return None
    typestr, dstate = dtype.args[0], dtype.state
    if not isinstance(typestr, str):
        return None
    if typestr.lstrip("<>|=").startswith("O"):
        return -1
    flags = dstate[7] if isinstance(dstate, tuple) and len(dstate) > 7 else 0
    if isinstance(flags, int) and flags & 1:  # NPY_ITEM_REFCOUNT: holds objects
        return -1
    elsize = dstate[5] if isinstance(dstate, tuple) and len(dstate) > 5 else -1
    if not isinstance(elsize, int) or elsize <= 0:
        digits = re.sub(r"\D", "", typestr)
        if not digits:
            return None
        elsize = int(digits)
    count = 1
    for n in shape:
        count *= n
    return count * elsize


def _genops(reader: Reader) -> Iterator[tuple[pickletools.OpcodeInfo, Any, int | None]]:
    return pickletools.genops(reader)  # type: ignore[arg-type]
