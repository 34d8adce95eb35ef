"""Checks a model file before llama.cpp loads it, at startup: its GGUF header (absurd
metadata aborts llama.cpp's whole process, so it is refused here with the reason) and
the syntax of the chat template it will be served with. A failure is a configuration
error that names the option, and the gateway exits with status 2 before serving."""

from __future__ import annotations

from pathlib import Path

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from backends.errors import ConfigError
from backends.llama_cpp.gguf_check import GGUFError, read_gguf
from backends.llama_cpp.options import SOURCE_KEYS, LlamaCppOptions


def preflight(model_file: Path, opts: LlamaCppOptions) -> None:
    key = next((k for k in SOURCE_KEYS if getattr(opts, k) is not None), "model_path")
    try:
        summary = read_gguf(model_file)
    except GGUFError as exc:
        raise ConfigError(f"the model file {model_file} cannot be loaded: {exc}", key) from None
    if opts.chat_template is not None:
        problem = template_syntax_error(opts.chat_template)
        if problem:
            raise ConfigError(f"the chat template {problem}", "chat_template")
    elif summary.chat_template is not None:
        problem = template_syntax_error(summary.chat_template)
        if problem:
            raise ConfigError(
                f"the chat template inside {model_file.name} {problem}; set chat_template "
                "(or chat_template_file) in the model's options to replace it",
                key,
            )


def template_syntax_error(source: str) -> str | None:
    """What is wrong with a Jinja template's syntax, or None. Parsing runs nothing."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    try:
        env.parse(source)
    except TemplateSyntaxError as exc:
        return f"is not valid Jinja: {exc.message} at line {exc.lineno}"
    return None
