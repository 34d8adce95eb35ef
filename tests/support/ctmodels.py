"""Tiny random-weight models that ctransformers loads, written at test time.

`write_gpt2_ggml`: a legacy GGML gpt2 file (the format of ggml's gpt-2 example): 256
raw-byte tokens plus `<|endoftext|>`, f32 weights, about 0.5 MB.
`write_llama_spm`: a llama GGUF with a SentencePiece-style vocabulary (scores, token
types, all 256 `<0xXX>` byte tokens, an `output.weight`), which is what ctransformers'
bundled llama.cpp needs, about 0.5 MB.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

GGML_MAGIC = 0x67676D6C


def write_gpt2_ggml(
    path: Path, n_embd: int = 64, n_layer: int = 2, n_head: int = 4, n_ctx: int = 256, seed: int = 0
) -> Path:
    rng = np.random.default_rng(seed)
    vocab = [bytes([b]) for b in range(256)] + [b"<|endoftext|>"]
    n_vocab = len(vocab)
    out = bytearray()
    out += struct.pack("<I", GGML_MAGIC)
    out += struct.pack("<6i", n_vocab, n_ctx, n_embd, n_head, n_layer, 0)  # ftype 0: f32
    out += struct.pack("<i", n_vocab)
    for token in vocab:
        out += struct.pack("<I", len(token)) + token

    def tensor(name: str, data: np.ndarray) -> None:
        # dims innermost first: a (rows, cols) numpy array is ggml's [cols, rows]
        dims = list(reversed(data.shape))
        encoded = name.encode()
        out.extend(struct.pack("<3i", len(dims), len(encoded), 0))
        out.extend(struct.pack(f"<{len(dims)}i", *dims))
        out.extend(encoded)
        out.extend(np.ascontiguousarray(data, dtype=np.float32).tobytes())

    def matrix(rows: int, cols: int) -> np.ndarray:
        return rng.standard_normal((rows, cols), dtype=np.float32) * 0.3

    ones, zeros = np.ones(n_embd, np.float32), np.zeros(n_embd, np.float32)
    tensor("model/ln_f/g", ones)
    tensor("model/ln_f/b", zeros)
    tensor("model/wte", matrix(n_vocab, n_embd))
    tensor("model/wpe", matrix(n_ctx, n_embd) * 0.1)
    for i in range(n_layer):
        p = f"model/h{i}"
        tensor(f"{p}/ln_1/g", ones)
        tensor(f"{p}/ln_1/b", zeros)
        tensor(f"{p}/attn/c_attn/w", matrix(3 * n_embd, n_embd))
        tensor(f"{p}/attn/c_attn/b", np.zeros(3 * n_embd, np.float32))
        tensor(f"{p}/attn/c_proj/w", matrix(n_embd, n_embd))
        tensor(f"{p}/attn/c_proj/b", zeros)
        tensor(f"{p}/ln_2/g", ones)
        tensor(f"{p}/ln_2/b", zeros)
        tensor(f"{p}/mlp/c_fc/w", matrix(4 * n_embd, n_embd))
        tensor(f"{p}/mlp/c_fc/b", np.zeros(4 * n_embd, np.float32))
        tensor(f"{p}/mlp/c_proj/w", matrix(n_embd, 4 * n_embd))
        tensor(f"{p}/mlp/c_proj/b", zeros)
    path.write_bytes(bytes(out))
    return path


SPM_PIECES = ["▁", "▁the", "▁a", "▁is", "▁of", "er", "in", "on", "he", "▁t", "an", "re"]


def spm_vocab() -> tuple[list[str], list[float], list[int]]:
    """<unk>, <s>, </s>, the 256 byte tokens, then letters and a few pieces."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [2, 3, 3]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [6] * 256
    words = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words += [chr(c) for c in range(ord("A"), ord("Z") + 1)] + SPM_PIECES
    tokens += words
    types += [1] * len(words)
    # longer pieces score higher, so the SPM merge prefers them
    scores = [0.0] * 259 + [float(len(w)) - i * 0.001 for i, w in enumerate(words)]
    return tokens, scores, types


def write_llama_spm(
    path: Path,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_ff: int = 128,
    n_ctx: int = 256,
    seed: int = 0,
) -> Path:
    import gguf

    rng = np.random.default_rng(seed)
    tokens, scores, types = spm_vocab()
    n_vocab = len(tokens)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama-spm-test")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(n_ff)
    writer.add_block_count(n_layer)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)

    def matrix(rows: int, cols: int) -> np.ndarray:
        return rng.standard_normal((rows, cols), dtype=np.float32) * 0.3

    writer.add_tensor("token_embd.weight", matrix(n_vocab, n_embd))
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", matrix(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", matrix(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", matrix(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", matrix(n_embd, n_ff))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    writer.add_tensor("output.weight", matrix(n_vocab, n_embd))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
