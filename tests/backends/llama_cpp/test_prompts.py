"""The exact token ids the llama_cpp backend puts before the model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from backends.base import ChatMessage, GenerationRequest
from backends.errors import InvalidRequest
from backends.llama_cpp import LlamaCppBackend
from tests.support.ggufgen import write_bloom


def test_fim_token_order(tmp_path: Path) -> None:
    path = write_bloom(tmp_path / "fim.gguf", fim=True)

    async def main() -> None:
        backend = LlamaCppBackend.from_config("fim", {"model_path": str(path)}, tmp_path)
        async with backend:
            model = backend._model
            assert model is not None
            prefix = model.tokenize("def add(a, b):", add_special=False)
            suffix = model.tokenize("\n    return c", add_special=False)
            tokens = backend.prompt_tokens(
                GenerationRequest("def add(a, b):", suffix="\n    return c")
            )
            # <fim_prefix> prefix <fim_suffix> suffix <fim_middle>, as the GGUF declares them
            assert tokens == [4, *prefix, 5, *suffix, 6]
            assert backend.capabilities.suffix

    asyncio.run(main())


def test_no_fim_tokens_no_suffix(tmp_path: Path) -> None:
    path = write_bloom(tmp_path / "plain.gguf")

    async def main() -> None:
        async with LlamaCppBackend.from_config("p", {"model_path": str(path)}, tmp_path) as b:
            assert not b.capabilities.suffix
            with pytest.raises(InvalidRequest) as err:
                b.prompt_tokens(GenerationRequest("x", suffix="y"))
            assert err.value.param == "suffix"

    asyncio.run(main())


def test_chat_template_rendering(tmp_path: Path) -> None:
    template = "{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}{{ eos_token }}"
    path = write_bloom(tmp_path / "chat.gguf", chat_template=template)

    async def main() -> None:
        async with LlamaCppBackend.from_config("c", {"model_path": str(path)}, tmp_path) as b:
            request = GenerationRequest(
                messages=(ChatMessage("system", "s"), ChatMessage("user", "hi"))
            )
            tokens = b.prompt_tokens(request)
            assert b._model is not None
            assert b._model.detokenize(tokens[:-1]) == "[system:s][user:hi]"
            assert tokens[-1] == 2  # eos_token, parsed as the special token

    asyncio.run(main())


def test_smollm2_template_renders_as_llama_cpp_python_does(smollm2_path: Path) -> None:
    """The reference: llama-cpp-python's own Jinja formatter on the same GGUF template."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]

    async def main() -> None:
        async with LlamaCppBackend.from_config(
            "s", {"model_path": str(smollm2_path), "n_ctx": 256, "parallel": 1}, Path(".")
        ) as b:
            assert b._model is not None and b._template is not None
            source = b._model.chat_template()
            assert source is not None
            reference = Jinja2ChatFormatter(
                source, eos_token="<|im_end|>", bos_token="<|im_start|>"
            )(messages=messages).prompt
            ours = b._template.render(tuple(ChatMessage(m["role"], m["content"]) for m in messages))
            assert ours == reference

    asyncio.run(main())
