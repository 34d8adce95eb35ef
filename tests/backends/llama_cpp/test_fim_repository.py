"""Fill-in-the-middle with repository context (llama.cpp server's `input_extra`), on
real tiny BLOOM GGUFs that declare FIM tokens: the token layout llama.cpp's server
builds (format_infill), with and without repo/file-separator tokens, and the oldest
context dropped first when it does not fit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from backends.base import Finished, GenerationRequest, SamplingParams
from backends.llama_cpp import LlamaCppBackend
from backends.llama_cpp.prompts import SNIPPET_SEPARATOR
from tests.support.ggufgen import write_bloom

PREFIX, SUFFIX = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
FILES = (("ops.py", "def sub(a, b):\n    return a - b\n"), ("b.py", "x = 1\n"))


Tok = Callable[[str], list[int]]


def _layout(path: Path, request: GenerationRequest, check: Callable[..., None]) -> None:
    """Calls `check(the request's prompt tokens, the FIM part alone, the tokenizer,
    n_ctx)` while the model is loaded."""

    async def main() -> None:
        opts = {"model_path": str(path), "threads": 1}
        async with LlamaCppBackend.from_config("fim", opts, path.parent) as backend:
            model = backend._model
            assert model is not None

            def tok(text: str) -> list[int]:
                return model.tokenize(text, add_special=False, parse_special=False)

            core = [4, *tok(PREFIX), 5, *tok(SUFFIX), 6]
            check(backend.prompt_tokens(request), core, tok, backend._n_ctx)

    asyncio.run(main())


def test_repository_context_with_repo_and_file_separator_tokens(tmp_path: Path) -> None:
    path = write_bloom(tmp_path / "repo.gguf", fim=True, fim_repo=True)
    request = GenerationRequest(PREFIX, suffix=SUFFIX, context_files=FILES)

    def check(tokens: list[int], core: list[int], tok: Tok, n_ctx: int) -> None:
        expected = [7, *tok("myproject\n")]  # <|repo_name|>myproject
        for filename, text in FILES:
            expected += [8, *tok(filename + "\n"), *tok(text)]  # <|file_sep|>name, chunk
        expected += [8, *tok("filename\n"), *core]  # <|file_sep|>filename, the FIM prompt
        assert tokens == expected

    _layout(path, request, check)


def test_repository_context_without_separator_tokens(tmp_path: Path) -> None:
    path = write_bloom(tmp_path / "fim.gguf", fim=True)
    request = GenerationRequest(PREFIX, suffix=SUFFIX, context_files=FILES)

    def check(tokens: list[int], core: list[int], tok: Tok, n_ctx: int) -> None:
        expected: list[int] = []
        for _, text in FILES:
            expected += [*tok(SNIPPET_SEPARATOR), *tok(text)]
        assert tokens == [*expected, *core]

    _layout(path, request, check)


def test_context_that_does_not_fit_loses_its_oldest_tokens(tmp_path: Path) -> None:
    """With 1000 tokens to generate, the prompt keeps the FIM part whole and as much
    of the newest context as fits in the rest of the context."""
    path = write_bloom(tmp_path / "fim.gguf", fim=True)
    files = tuple((f"f{i}.py", "abcdefgh " * 40) for i in range(12))
    request = GenerationRequest(
        PREFIX, SamplingParams(max_tokens=1000), suffix=SUFFIX, context_files=files
    )

    def check(tokens: list[int], core: list[int], tok: Tok, n_ctx: int) -> None:
        assert tokens[-len(core) :] == core
        assert len(tokens) == n_ctx - 1000
        whole = [t for _, text in files for t in [*tok(SNIPPET_SEPARATOR), *tok(text)]]
        assert tokens[: -len(core)] == whole[len(whole) - (len(tokens) - len(core)) :]

    _layout(path, request, check)


def test_a_warm_up_with_much_context_still_fits(tmp_path: Path) -> None:
    """llama.vscode's warm-up asks for no tokens; the prompt still leaves room for one
    (a prompt that fills the whole context is refused)."""
    path = write_bloom(tmp_path / "fim.gguf", fim=True)
    files = tuple((f"f{i}.py", "abcdefgh " * 40) for i in range(12))
    request = GenerationRequest(
        PREFIX, SamplingParams(max_tokens=0), suffix=SUFFIX, context_files=files
    )

    def check(tokens: list[int], core: list[int], tok: Tok, n_ctx: int) -> None:
        assert len(tokens) == n_ctx - 1

    _layout(path, request, check)

    async def generate() -> None:
        opts = {"model_path": str(path), "threads": 1}
        async with LlamaCppBackend.from_config("fim", opts, path.parent) as backend:
            events = [e async for e in backend.generate(request)]
        assert isinstance(events[-1], Finished) and events[-1].usage.completion_tokens == 0

    asyncio.run(generate())
