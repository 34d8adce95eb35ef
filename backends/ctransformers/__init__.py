"""GGML and SentencePiece-llama GGUF models through ctransformers, one request at a time."""

from backends.ctransformers.backend import CTransformersBackend

__all__ = ["CTransformersBackend"]
