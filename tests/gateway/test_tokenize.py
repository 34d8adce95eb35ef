"""POST /tokenize, POST /detokenize, GET /tokenizer_info (and their /v1 twins).

The wire (both dialects' fields and defaults, model choice, refusals) is tested in
process over a scripted backend that records what it was asked; what the real
tokenizer answers is tested on SmolLM2 through the live gateway."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from backends.base import TokenizerInfo
from tests.conftest import BLOOM_ID, SMOL_ID
from tests.support.inprocess import ScriptedBackend, asgi_client, scripted_app
from tests.support.server import GatewayProcess
from tests.support.wire import assert_envelope

END = "<|im_end|>"


class TokenizingBackend(ScriptedBackend):
    """Tokenizes one character per token (its code point) and records every call."""

    def __init__(self, model_id: str) -> None:
        super().__init__(model_id)
        self.asked: list[tuple[Any, ...]] = []

    async def tokenize(
        self, text: str, add_special: bool = False, parse_special: bool = True
    ) -> list[int]:
        self.asked.append(("tokenize", text, add_special, parse_special))
        return ([1] if add_special else []) + [ord(c) for c in text]

    async def detokenize(self, tokens: Sequence[int]) -> str:
        self.asked.append(("detokenize", list(tokens)))
        return "".join(chr(t) for t in tokens)

    async def token_pieces(self, tokens: Sequence[int]) -> list[bytes]:
        # a lone byte of a split UTF-8 character for id 0xE6, text otherwise
        return [b"\xe6" if t == 0xE6 else chr(t).encode() for t in tokens]

    def tokenizer_info(self) -> TokenizerInfo:
        return TokenizerInfo("<s>", "</s>", None, True, "{{ messages }}", 128, 256)


async def call(
    method: str, path: str, body: Any = None, models: int = 1, plain: bool = False
) -> tuple[httpx.Response, list[TokenizingBackend | ScriptedBackend]]:
    backends: list[TokenizingBackend | ScriptedBackend] = [
        TokenizingBackend(f"m{i}") for i in range(models)
    ]
    if plain:
        backends = [ScriptedBackend("plain"), *backends]
    async with asgi_client(scripted_app(backends)) as client:
        if method == "GET":
            response = await client.get(path, params=body)
        else:
            response = await client.post(path, json=body)
    return response, backends


@pytest.mark.anyio
@pytest.mark.parametrize("prefix", ["", "/v1"])
@pytest.mark.parametrize(
    ("body", "asked"),
    [
        # llama.cpp's server: no BOS unless asked for, specials parsed unless told not to
        ({"content": "ab"}, ("tokenize", "ab", False, True)),
        ({"content": "ab", "add_special": True}, ("tokenize", "ab", True, True)),
        ({"content": "ab", "parse_special": False}, ("tokenize", "ab", False, False)),
        # vLLM's (lm-evaluation-harness's remote tokenizer): a prompt's tokens by default
        ({"prompt": "ab"}, ("tokenize", "ab", True, True)),
        ({"prompt": "ab", "add_special_tokens": False}, ("tokenize", "ab", False, True)),
        ({"content": "", "model": "m1"}, ("tokenize", "", False, True)),
    ],
)
async def test_tokenize_fields_and_defaults(
    prefix: str, body: dict[str, Any], asked: tuple[Any, ...]
) -> None:
    response, backends = await call("POST", f"{prefix}/tokenize", body, models=2)
    assert response.status_code == 200, response.text
    chosen = backends[1] if body.get("model") == "m1" else backends[0]
    assert isinstance(chosen, TokenizingBackend) and chosen.asked == [asked]
    tokens = ([1] if asked[2] else []) + [ord(c) for c in asked[1]]
    assert response.json() == {"tokens": tokens, "count": len(tokens), "max_model_len": None}


@pytest.mark.anyio
async def test_tokenize_with_pieces() -> None:
    response, _ = await call("POST", "/tokenize", {"content": "a\u00e6", "with_pieces": True})
    assert response.status_code == 200, response.text
    # llama.cpp's rule: a piece is text when it is valid UTF-8, else its bytes
    assert response.json()["tokens"] == [{"id": 97, "piece": "a"}, {"id": 230, "piece": [230]}]


@pytest.mark.anyio
@pytest.mark.parametrize("prefix", ["", "/v1"])
async def test_detokenize_answers_both_dialects(prefix: str) -> None:
    response, backends = await call("POST", f"{prefix}/detokenize", {"tokens": [104, 105]})
    assert response.status_code == 200, response.text
    assert response.json() == {"content": "hi", "prompt": "hi"}
    assert backends[0].asked == [("detokenize", [104, 105])]  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_tokenizer_info() -> None:
    response, _ = await call("GET", "/tokenizer_info", {"model": "m1"}, models=2)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "model": "m1",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": None,
        "add_bos_token": True,
        "chat_template": "{{ messages }}",
        "max_model_len": 128,
        "model_max_length": 128,
        "vocab_size": 256,
    }


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/tokenize", {}, "content"),
        ("/tokenize", {"content": None}, "content"),
        ("/tokenize", {"content": 5}, "content"),
        ("/tokenize", {"prompt": ["a"]}, "prompt"),
        ("/tokenize", {"content": "a", "prompt": "a"}, "content"),
        ("/tokenize", {"content": "a", "add_special": "yes"}, "add_special"),
        ("/tokenize", {"content": "a", "add_special": True, "add_special_tokens": True}, None),
        ("/tokenize", {"content": "a", "with_pieces": 1}, "with_pieces"),
        ("/tokenize", {"content": "a", "model": 3}, "model"),
        # vLLM fields this gateway knows and cannot honour: refused, never ignored
        ("/tokenize", {"messages": [{"role": "user", "content": "a"}]}, "messages"),
        ("/tokenize", {"content": "a", "return_token_strs": True}, "return_token_strs"),
        ("/detokenize", {}, "tokens"),
        ("/detokenize", {"tokens": "1 2"}, "tokens"),
        ("/detokenize", {"tokens": [1, "2"]}, "tokens"),
        ("/detokenize", {"tokens": [1, True]}, "tokens"),
        ("/detokenize", {"tokens": [1.5]}, "tokens"),
    ],
)
async def test_bad_fields_are_400s_naming_them(
    path: str, body: dict[str, Any], param: str | None
) -> None:
    response, backends = await call("POST", path, body)
    assert_envelope(response, 400, param=param or "add_special")
    assert backends[0].asked == []  # type: ignore[union-attr]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/tokenize", {"content": "a", "model": "nope"}),
        ("POST", "/detokenize", {"tokens": [1], "model": "nope"}),
        ("GET", "/tokenizer_info", {"model": "nope"}),
    ],
)
async def test_unknown_model_is_404(method: str, path: str, body: dict[str, Any]) -> None:
    response, _ = await call(method, path, body)
    assert_envelope(response, 404, param="model", code="model_not_found")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/tokenize", {"content": "a"}),
        ("POST", "/v1/detokenize", {"tokens": [1]}),
        ("GET", "/tokenizer_info", None),
    ],
)
async def test_a_backend_without_a_tokenizer_says_so(
    method: str, path: str, body: dict[str, Any] | None
) -> None:
    """The first configured model is the default; this one's backend has no tokenizer."""
    response, _ = await call(method, path, body, plain=True)
    error = assert_envelope(response, 400, param="model")
    assert "Tokenization is not supported by the 'scripted' backend" in error["message"]


# -- the real tokenizer, through the live gateway ----------------------------------------


@pytest.fixture(scope="module")
def http(gateway: GatewayProcess) -> httpx.Client:
    return httpx.Client(base_url=gateway.base_url, timeout=60)


def test_llama_cpp_shapes_on_smollm2(http: httpx.Client) -> None:
    text = f"Hello{END} world"
    plain = http.post("/tokenize", json={"content": text}).json()
    assert plain["tokens"] == [19556, 2, 905] and plain["count"] == 3
    assert http.post("/v1/tokenize", json={"content": text, "model": SMOL_ID}).json() == plain
    literal = http.post("/tokenize", json={"content": text, "parse_special": False}).json()
    assert 2 not in literal["tokens"] and len(literal["tokens"]) > 3
    pieces = http.post("/tokenize", json={"content": text, "with_pieces": True}).json()
    assert pieces["tokens"] == [
        {"id": 19556, "piece": "Hello"},
        {"id": 2, "piece": END},
        {"id": 905, "piece": " world"},
    ]
    back = http.post("/detokenize", json={"tokens": plain["tokens"]}).json()
    assert back == {"content": text, "prompt": text}


def test_split_characters_come_back_as_bytes(http: httpx.Client) -> None:
    text = "I love 😀 and 日本語"
    pieces = http.post("/tokenize", json={"content": text, "with_pieces": True}).json()["tokens"]
    raw = b"".join(
        bytes(p["piece"]) if isinstance(p["piece"], list) else p["piece"].encode() for p in pieces
    )
    assert raw.decode() == text
    assert any(isinstance(p["piece"], list) for p in pieces)  # SmolLM2 splits the emoji
    ids = [p["id"] for p in pieces]
    assert http.post("/detokenize", json={"tokens": ids}).json()["content"] == text


def test_model_choice_and_vocabulary_bounds(http: httpx.Client) -> None:
    info = http.get("/tokenizer_info").json()
    assert info["model"] == SMOL_ID and info["vocab_size"] == 49152  # the first configured
    bloom = http.get("/v1/tokenizer_info", params={"model": BLOOM_ID}).json()
    assert bloom["model"] == BLOOM_ID and bloom["vocab_size"] != info["vocab_size"]
    assert http.post("/tokenize", json={"content": "ab", "model": BLOOM_ID}).status_code == 200
    for bad in (49152, -1):
        response = http.post("/detokenize", json={"tokens": [1, bad]})
        assert_envelope(response, 400, param="tokens")
        assert str(bad) in response.json()["error"]["message"]
