"""Rewrite a byte-level-BPE llama-family GGUF (SmolLM2, for one) into a file that
ctransformers' bundled llama.cpp (September 2023) loads and runs coherently.

That llama.cpp needs what GGUF files of its day had and modern ones dropped:
- `tokenizer.ggml.scores` (its loader reads them unconditionally): added, by rank;
- `output.weight`: modern small models tie it to `token_embd.weight`; added as a copy;
- token texts as raw bytes: its BPE tokenizer looks words up byte for byte, without
  GPT-2's byte-to-unicode table ("Ġ" for a space, "Ċ" for a newline), so each token
  is turned back into its bytes (special tokens are kept as they are);
- merges: only those made of printable ASCII and "Ġ"/"Ċ" (space and newline) are
  kept, as written (see `convert_merge`);
- file version 2 (the same header as 3).
Special tokens such as `<|im_start|>` are not parsed from text by it afterwards: chat
templates become plain text.

Needs the `gguf` package (a dependency of the project).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backends.errors import ConfigError

CONTROL_TYPES = (3, 4)  # control, user-defined: kept as they are written
FILE_VERSION = 2
# Written into converted files, so the backend can tell them from the byte-level-BPE
# files that crash ctransformers (the tokenizer is still "gpt2" in both).
MARKER = "ctransformers.raw_byte_tokens"


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def raw_bytes(text: str, decode: dict[str, int]) -> bytes | None:
    """A byte-level token's raw bytes; None when it is not byte-level text."""
    try:
        return bytes(decode[ch] for ch in text)
    except KeyError:
        return None


def convert_merge(merge: str) -> str | None:
    """A merge kept as written when it is made of printable ASCII and "Ġ"/"Ċ" only:
    its tokenizer turns spaces and newlines of the text into those two before merging
    (and then looks the merged pieces up as raw bytes), while merges over any other
    byte-level character can never apply to raw-byte tokens."""
    first, _, second = merge.partition(" ")
    if not first or not second:
        return None
    if all(0x21 <= ord(ch) <= 0x7E or ch in "ĠĊ" for ch in first + second):
        return merge
    return None


def convert(source: Path, target: Path) -> dict[str, int]:
    """Write the converted file; return counts for the command's report."""
    import gguf

    try:
        reader = gguf.GGUFReader(source)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {source.name} as GGUF: {exc}") from None
    fields = reader.fields
    arch = _string(fields, "general.architecture")
    model = _string(fields, "tokenizer.ggml.model")
    if arch != "llama":
        raise ConfigError(f"only llama-architecture GGUFs are converted (this one: {arch!r})")
    if model != "gpt2":
        raise ConfigError(
            f"the vocabulary is {model!r}, not byte-level BPE ('gpt2'): nothing to convert"
        )
    decode = {ch: b for b, ch in byte_to_unicode().items()}
    tokens: list[str] = fields["tokenizer.ggml.tokens"].contents()
    types: list[int] = fields["tokenizer.ggml.token_type"].contents()
    new_tokens: list[bytes] = []
    for text, kind in zip(tokens, types, strict=True):
        raw = None if kind in CONTROL_TYPES else raw_bytes(text, decode)
        new_tokens.append(raw if raw is not None else text.encode("utf-8"))
    merges_field = fields.get("tokenizer.ggml.merges")
    merges = merges_field.contents() if merges_field is not None else []
    new_merges = [m for m in (convert_merge(m) for m in merges) if m is not None]
    scores = [-float(i) for i in range(len(tokens))]

    writer = gguf.GGUFWriter(target, arch)
    replaced = {
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.scores",
        "general.architecture",
        MARKER,
    }
    for field in fields.values():
        if field.name.startswith("GGUF.") or field.name in replaced:
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    writer.add_token_list(new_tokens)
    writer.add_token_merges(new_merges)
    writer.add_token_scores(scores)
    writer.add_bool(MARKER, True)

    names = {t.name for t in reader.tensors}
    embedding = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    tensors: list[Any] = list(reader.tensors)
    for tensor in tensors:
        writer.add_tensor_info(
            tensor.name,
            tensor.data.shape,
            tensor.data.dtype,
            tensor.data.nbytes,
            tensor.tensor_type,
        )
    tied = "output.weight" not in names and embedding is not None
    if tied:
        assert embedding is not None
        writer.add_tensor_info(
            "output.weight",
            embedding.data.shape,
            embedding.data.dtype,
            embedding.data.nbytes,
            embedding.tensor_type,
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in tensors:
        writer.write_tensor_data(tensor.data)
    if tied:
        writer.write_tensor_data(embedding.data)
    writer.close()
    with target.open("r+b") as f:  # version 3 and 2 share the header: say 2
        f.seek(4)
        f.write(FILE_VERSION.to_bytes(4, "little"))
    return {"tokens": len(new_tokens), "merges_kept": len(new_merges), "merges": len(merges)}


def _string(fields: Any, key: str) -> str | None:
    field = fields.get(key)
    return field.contents() if field is not None else None
