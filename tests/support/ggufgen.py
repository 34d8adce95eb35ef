"""Write small GGUF files at test time with the `gguf` package.

`write_bloom` builds a BLOOM-architecture model (the reference model's architecture)
with random weights and a byte-level BPE vocabulary: a few MB, written in well under
a second, and loadable by llama.cpp. The same writer with bloomz-560m's shapes and
Q8_0 weights gives a file that is right for speed and memory measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
# A few merges so the tokenizer does real BPE work.
MERGES = [
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "n"),
    ("a", "n"),
    ("e", "r"),
    ("o", "n"),
    ("Ġ", "a"),
    ("r", "e"),
    ("Ġ", "s"),
]


def byte_symbols() -> list[str]:
    """GPT-2's reversible byte -> printable character table, in byte order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


FIM_TOKENS = ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"]
FIM_REPO_TOKENS = ["<|repo_name|>", "<|file_sep|>"]  # repository-level FIM (ids 7, 8)


def bloom_vocab(
    size: int | None = None, fim: bool = False, fim_repo: bool = False
) -> tuple[list[str], list[int], list[str]]:
    specials = [*SPECIALS, *FIM_TOKENS] if fim else SPECIALS
    if fim and fim_repo:
        specials = [*specials, *FIM_REPO_TOKENS]
    tokens = [*specials, *byte_symbols()]
    merges = []
    for left, right in MERGES:
        merges.append(f"{left} {right}")
        tokens.append(left + right)
    types = [3] * len(specials) + [1] * (len(tokens) - len(specials))
    if size is not None:  # pad to a real model's vocabulary size with unused tokens
        while len(tokens) < size:
            tokens.append(f"<extra_{len(tokens)}>")
            types.append(4)  # user-defined
    return tokens, types, merges


@dataclass(frozen=True)
class BloomShape:
    n_vocab: int | None = None  # None: just the byte vocabulary (~270 tokens)
    n_embd: int = 128
    n_layer: int = 2
    n_head: int = 4
    n_ff: int = 512
    n_ctx: int = 2048


BLOOMZ_560M = BloomShape(n_vocab=250_880, n_embd=1024, n_layer=24, n_head=16, n_ff=4096, n_ctx=2048)


def write_bloom(
    path: Path,
    shape: BloomShape = BloomShape(),
    q8_0: bool = False,
    seed: int = 0,
    fim: bool = False,
    chat_template: str | None = None,
    fim_repo: bool = False,
) -> Path:
    """`fim` adds <fim_prefix>/<fim_suffix>/<fim_middle> (ids 4, 5, 6) and declares them;
    with `fim_repo` also <|repo_name|>/<|file_sep|> (ids 7, 8), as Qwen2.5-Coder has;
    `chat_template` is stored as tokenizer.chat_template."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens, types, merges = bloom_vocab(shape.n_vocab, fim, fim_repo)
    n_vocab, d, ff = len(tokens), shape.n_embd, shape.n_ff
    writer = gguf.GGUFWriter(str(path), "bloom")
    writer.add_name("tiny-bloom-test")
    writer.add_context_length(shape.n_ctx)
    writer.add_embedding_length(d)
    writer.add_feed_forward_length(ff)
    writer.add_block_count(shape.n_layer)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head)
    writer.add_layer_norm_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if q8_0 else gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("bloom")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(3)
    writer.add_add_bos_token(False)
    if fim:
        writer.add_uint32("tokenizer.ggml.fim_pre_token_id", 4)
        writer.add_uint32("tokenizer.ggml.fim_suf_token_id", 5)
        writer.add_uint32("tokenizer.ggml.fim_mid_token_id", 6)
        if fim_repo:
            writer.add_uint32("tokenizer.ggml.fim_rep_token_id", 7)
            writer.add_uint32("tokenizer.ggml.fim_sep_token_id", 8)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float32)

    def add_matrix(name: str, rows: int, cols: int) -> None:
        data = matrix(rows, cols)
        if q8_0:
            quant = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(
                name, quant, raw_shape=quant.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0
            )
        else:
            writer.add_tensor(name, data)

    def add_norm(name: str, width: int) -> None:
        writer.add_tensor(f"{name}.weight", np.ones(width, dtype=np.float32))
        writer.add_tensor(f"{name}.bias", np.zeros(width, dtype=np.float32))

    add_matrix("token_embd.weight", n_vocab, d)
    add_norm("token_embd_norm", d)
    for i in range(shape.n_layer):
        add_norm(f"blk.{i}.attn_norm", d)
        add_matrix(f"blk.{i}.attn_qkv.weight", 3 * d, d)
        writer.add_tensor(f"blk.{i}.attn_qkv.bias", np.zeros(3 * d, dtype=np.float32))
        add_matrix(f"blk.{i}.attn_output.weight", d, d)
        writer.add_tensor(f"blk.{i}.attn_output.bias", np.zeros(d, dtype=np.float32))
        add_norm(f"blk.{i}.ffn_norm", d)
        add_matrix(f"blk.{i}.ffn_up.weight", ff, d)
        writer.add_tensor(f"blk.{i}.ffn_up.bias", np.zeros(ff, dtype=np.float32))
        add_matrix(f"blk.{i}.ffn_down.weight", d, ff)
        writer.add_tensor(f"blk.{i}.ffn_down.bias", np.zeros(d, dtype=np.float32))
    add_norm("output_norm", d)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
