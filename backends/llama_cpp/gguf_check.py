"""Read a GGUF file's header and refuse absurd metadata before llama.cpp sees it.

llama.cpp trusts a GGUF's hyper-parameters: a `block_count` of 10^9 in a 2 MB file
aborts the whole process in a `GGML_ASSERT`, which no Python code can catch. This
module reads the header itself (magic, version, key/value section, tensor table) with
bounded reads, never trusting a count before checking it against the bytes left, and
checks the numbers that size llama.cpp's allocations against each other and against
the file size. A file that fails says why, in words an operator can act on.

Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (little-endian).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # what llama.cpp reads; version 1 had 32-bit counts
MAX_LAYERS = 512  # llama.cpp's LLAMA_MAX_LAYERS: more aborts while loading
MAX_EXPERTS = 512  # llama.cpp asserts on expert counts past its own limit (256 today)
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_CONTEXT = 1 << 27  # 134M tokens: far past any trained context
MAX_KEY_BYTES = 1 << 16
DEFAULT_ALIGNMENT = 32

# value type -> struct format of one scalar
SCALARS = {
    0: "<B",  # uint8
    1: "<b",  # int8
    2: "<H",  # uint16
    3: "<h",  # int16
    4: "<I",  # uint32
    5: "<i",  # int32
    6: "<f",  # float32
    7: "<?",  # bool
    10: "<Q",  # uint64
    11: "<q",  # int64
    12: "<d",  # float64
}
STRING, ARRAY = 8, 9

# ggml tensor type -> (elements per block, bytes per block)
TENSOR_TYPES: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 40),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
    39: (32, 17),  # MXFP4
}


class GGUFError(ValueError):
    """The file is not a GGUF llama.cpp can safely load; the message says why."""


@dataclass(frozen=True, slots=True)
class Tensor:
    name: str
    dims: tuple[int, ...]
    type: int
    offset: int


@dataclass(frozen=True, slots=True)
class GGUFSummary:
    version: int
    metadata: dict[str, Any]  # scalars and strings; arrays as their length
    tensors: tuple[Tensor, ...] = field(default=())

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    @property
    def chat_template(self) -> str | None:
        template = self.metadata.get("tokenizer.chat_template")
        return template if isinstance(template, str) else None


@dataclass(frozen=True, slots=True)
class ArrayInfo:
    """An array value, kept as its element type and length (vocabularies are big)."""

    type: int
    length: int
    first: tuple[Any, ...] = ()  # the first few numbers, for per-layer head counts


class _Reader:
    """Reads a file front to back and refuses any read past its end."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self.size = size
        self.pos = 0

    @property
    def left(self) -> int:
        return self.size - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.left:
            raise GGUFError(
                f"truncated or corrupt: {what} needs {n} bytes at offset {self.pos}, "
                f"but the file has {self.left} left"
            )
        data = self._f.read(n)
        if len(data) != n:
            raise GGUFError(f"truncated: the file ended while reading {what}")
        self.pos += n
        return data

    def scalar(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str, limit: int | None = None) -> str:
        n = self.scalar("<Q", what)
        if limit is not None and n > limit:
            raise GGUFError(f"{what} is {n} bytes long (at most {limit} expected)")
        return self.take(n, what).decode("utf-8", "replace")

    def skip_string(self, what: str) -> None:
        n = self.scalar("<Q", what)
        if n > self.left:
            self.take(n, what)  # raises with the numbers
        self._f.seek(n, 1)
        self.pos += n


def read_gguf(path: Path) -> GGUFSummary:
    """Read and check the header of the GGUF at `path`; raise GGUFError saying what is
    wrong. Reads the key/value section and the tensor table, never the weights."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            summary = _read(_Reader(f, size))
    except OSError as exc:
        raise GGUFError(f"cannot read the file ({exc.strerror or type(exc).__name__})") from None
    check_hyperparameters(summary, size)
    return summary


def _read(r: _Reader) -> GGUFSummary:
    start = r.take(min(4, r.left), "the magic number")
    if start != MAGIC:
        raise GGUFError(f"not a GGUF file (it starts with {start!r}, not {MAGIC!r})")
    version = r.scalar("<I", "the version")
    if version not in VERSIONS:
        if struct.unpack(">I", struct.pack("<I", version))[0] in VERSIONS:
            raise GGUFError("a big-endian GGUF file: llama.cpp here reads little-endian ones")
        raise GGUFError(f"unsupported GGUF version {version} (llama.cpp reads 2 and 3)")
    n_tensors = r.scalar("<Q", "the tensor count")
    n_kv = r.scalar("<Q", "the key/value count")
    # The smallest key/value pair is 13 bytes (empty key, type, one byte); the
    # smallest tensor entry 32 (empty name, one dimension, type, offset).
    if n_kv * 13 > r.left:
        raise GGUFError(f"corrupt header: {n_kv} key/value pairs cannot fit in the file")
    if n_tensors * 32 > r.left:
        raise GGUFError(f"corrupt header: {n_tensors} tensors cannot fit in the file")
    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        key = r.string(f"key #{i}", MAX_KEY_BYTES)
        metadata[key] = _value(r, key)
    tensors = tuple(_tensor(r, i) for i in range(n_tensors))
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFError(f"general.alignment {alignment!r} is not a power of two")
    data_start = -(-r.pos // alignment) * alignment
    _check_tensor_data(tensors, r.size - data_start)
    return GGUFSummary(version, metadata, tensors)


def _value(r: _Reader, key: str) -> Any:
    vtype = r.scalar("<I", f"the type of {key}")
    if vtype in SCALARS:
        return r.scalar(SCALARS[vtype], key)
    if vtype == STRING:
        return r.string(key)
    if vtype != ARRAY:
        raise GGUFError(f"{key} has an unknown value type {vtype}")
    etype = r.scalar("<I", f"the element type of {key}")
    length = r.scalar("<Q", f"the length of {key}")
    if etype == STRING:
        if length * 8 > r.left:
            raise GGUFError(f"{key} claims {length} strings, more than the file can hold")
        for i in range(length):
            r.skip_string(f"{key}[{i}]")
        return ArrayInfo(etype, length)
    if etype not in SCALARS:
        raise GGUFError(f"{key} is an array of unsupported element type {etype}")
    fmt = SCALARS[etype]
    width = struct.calcsize(fmt)
    if length * width > r.left:
        raise GGUFError(f"{key} claims {length} elements, more than the file can hold")
    data = r.take(length * width, key)
    first = struct.unpack(f"<{min(length, MAX_LAYERS)}{fmt[1]}", data[: MAX_LAYERS * width])
    return ArrayInfo(etype, length, first)


def _tensor(r: _Reader, i: int) -> Tensor:
    name = r.string(f"the name of tensor #{i}", MAX_KEY_BYTES)
    n_dims = r.scalar("<I", f"the dimension count of {name}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise GGUFError(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS} expected)")
    dims = tuple(r.scalar("<Q", f"the dimensions of {name}") for _ in range(n_dims))
    ttype = r.scalar("<I", f"the type of {name}")
    offset = r.scalar("<Q", f"the data offset of {name}")
    return Tensor(name, dims, ttype, offset)


def _check_tensor_data(tensors: tuple[Tensor, ...], data_size: int) -> None:
    for t in tensors:
        if t.type not in TENSOR_TYPES:
            raise GGUFError(f"tensor {t.name!r} has an unknown type {t.type}")
        block, block_bytes = TENSOR_TYPES[t.type]
        elements = 1
        for d in t.dims:
            elements *= d
        if elements > 1 << 60 or t.dims[0] % block:
            raise GGUFError(f"tensor {t.name!r} has impossible dimensions {list(t.dims)}")
        end = t.offset + elements // block * block_bytes
        if end > data_size:
            raise GGUFError(
                f"truncated or corrupt: tensor {t.name!r} ends {end} bytes into the "
                f"data section, but the file holds {max(0, data_size)} bytes of data"
            )


def check_hyperparameters(summary: GGUFSummary, file_size: int) -> None:
    """The numbers llama.cpp sizes its allocations with, against each other and the file."""
    meta = summary.metadata
    arch = summary.architecture
    if arch is None:
        raise GGUFError("general.architecture is missing: this is not a model file")

    def number(name: str) -> int | None:
        value = meta.get(f"{arch}.{name}")
        if value is None or isinstance(value, str):
            return None
        if isinstance(value, ArrayInfo):  # per-layer values: check the largest
            return int(max(value.first)) if value.first else 0
        return int(value)

    n_tensors = len(summary.tensors)
    blocks = number("block_count")
    if blocks is not None and not 0 < blocks <= min(MAX_LAYERS, n_tensors):
        raise GGUFError(
            f"{arch}.block_count is {blocks}, but the file holds {n_tensors} tensors "
            f"(and llama.cpp loads at most {MAX_LAYERS} layers)"
        )
    embd = number("embedding_length")
    vocab = meta.get("tokenizer.ggml.tokens")
    n_vocab = vocab.length if isinstance(vocab, ArrayInfo) else None
    if n_vocab is not None and not 0 < n_vocab < 1 << 31:
        raise GGUFError(f"the vocabulary has {n_vocab} tokens")
    # The token embeddings alone are n_vocab x n_embd weights: even at one bit a weight
    # (no quantisation goes below 1.5) they must fit in the file.
    if embd is not None and (embd <= 0 or embd * (n_vocab or 1) > file_size * 8):
        raise GGUFError(
            f"{arch}.embedding_length is {embd}: with {n_vocab or 1} tokens its "
            f"embeddings alone need more than the file's {file_size} bytes"
        )
    for name in ("attention.head_count", "attention.head_count_kv"):
        heads = number(name)
        if heads is not None and embd is not None and not 0 <= heads <= embd:
            raise GGUFError(f"{arch}.{name} is {heads}, more than embedding_length {embd}")
    heads, kv_heads = number("attention.head_count"), number("attention.head_count_kv")
    if heads is not None and kv_heads is not None and kv_heads > heads:
        raise GGUFError(f"{arch}.attention.head_count_kv {kv_heads} exceeds head_count {heads}")
    context = number("context_length")
    if context is not None and not 0 < context <= MAX_CONTEXT:
        raise GGUFError(f"{arch}.context_length is {context} (1 to {MAX_CONTEXT} expected)")
    experts, used = number("expert_count"), number("expert_used_count")
    if experts is not None and not 0 <= experts <= MAX_EXPERTS:
        raise GGUFError(f"{arch}.expert_count is {experts} (at most {MAX_EXPERTS} expected)")
    if used is not None and not 0 <= used <= (experts or 0):
        raise GGUFError(f"{arch}.expert_used_count {used} exceeds expert_count {experts}")
