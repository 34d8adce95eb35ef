"""Remote OpenAI-compatible upstreams over httpx: replicas, health, retries."""

from backends.openai_http.backend import OpenAIHTTPBackend

__all__ = ["OpenAIHTTPBackend"]
