"""GGUF models through llama-cpp-python, with a batching engine."""

from backends.llama_cpp.backend import LlamaCppBackend

__all__ = ["LlamaCppBackend"]
