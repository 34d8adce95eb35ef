"""`/tokenize`, `/detokenize` and `/tokenizer_info`: request bodies in, neutral calls
out, results back as JSON.

Two dialects share these paths. llama.cpp's server: `{"content", "add_special",
"parse_special", "with_pieces"}` -> `{"tokens"}`, `{"tokens"}` -> `{"content"}`. vLLM's,
which lm-evaluation-harness's remote tokenizer speaks: `{"prompt",
"add_special_tokens"}` -> `{"tokens", "count", "max_model_len"}`, `{"tokens"}` ->
`{"prompt"}`, and `GET /tokenizer_info`. Answers carry both dialects' keys, so either
client reads them as it expects. Both take an optional `model` (default: the first
configured model)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from backends.base import TokenizerInfo
from gateway.errors import invalid
from gateway.openai import params as p


@dataclass(frozen=True, slots=True)
class TokenizeCall:
    model: str | None
    text: str
    add_special: bool
    parse_special: bool
    with_pieces: bool


@dataclass(frozen=True, slots=True)
class DetokenizeCall:
    model: str | None
    tokens: tuple[int, ...]


def parse_tokenize(body: p.Body) -> TokenizeCall:
    for field, instead in (("messages", "'content'"), ("return_token_strs", "'with_pieces'")):
        if body.get(field) not in (None, False):
            raise invalid(f"'{field}' is not supported here; use {instead}.", field)
    if body.get("content") is not None and body.get("prompt") is not None:
        raise invalid("Set 'content' or 'prompt', not both.", "content")
    text_key = "content" if body.get("content") is not None else "prompt"
    text = p.get_str(body, text_key)
    if text is None:
        raise invalid("Missing required parameter: 'content' (the text to tokenize).", "content")
    if "add_special" in body and "add_special_tokens" in body:
        raise invalid("Set 'add_special' or 'add_special_tokens', not both.", "add_special")
    # The defaults of each dialect: llama.cpp adds no BOS unless asked; vLLM gives the
    # tokens a prompt gets (a BOS where the model adds one).
    default = text_key == "prompt"
    add_key = "add_special_tokens" if "add_special_tokens" in body else "add_special"
    return TokenizeCall(
        model=p.get_str(body, "model"),
        text=text,
        add_special=p.get_bool(body, add_key, default),
        parse_special=p.get_bool(body, "parse_special", True),
        with_pieces=p.get_bool(body, "with_pieces", False),
    )


def parse_detokenize(body: p.Body) -> DetokenizeCall:
    tokens = body.get("tokens")
    if tokens is None:
        raise invalid("Missing required parameter: 'tokens'.", "tokens")
    if not isinstance(tokens, list) or not all(p.is_int(t) for t in tokens):
        raise invalid(
            f"Invalid type for 'tokens': expected an array of token ids, but got {p.show(tokens)}.",
            "tokens",
        )
    return DetokenizeCall(model=p.get_str(body, "model"), tokens=tuple(tokens))


def piece_json(piece: bytes) -> str | list[int]:
    """llama.cpp's rule: the piece as text when it is valid UTF-8, else its bytes."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return list(piece)


def tokenize_json(
    tokens: list[int], pieces: list[bytes] | None, max_model_len: int | None
) -> dict[str, Any]:
    listed: list[Any] = (
        tokens
        if pieces is None
        else [{"id": t, "piece": piece_json(b)} for t, b in zip(tokens, pieces, strict=True)]
    )
    return {"tokens": listed, "count": len(tokens), "max_model_len": max_model_len}


def detokenize_json(text: str) -> dict[str, Any]:
    return {"content": text, "prompt": text}


def tokenizer_info_json(model: str, info: TokenizerInfo) -> dict[str, Any]:
    body = asdict(info)
    body["model"] = model
    body["model_max_length"] = info.max_model_len  # the name in Hugging Face's configs
    return body
