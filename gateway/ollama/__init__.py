"""Ollama's API (/api/*): its JSON in, neutral calls out; neutral events in, its
JSON objects and newline-delimited JSON streams out; errors as {"error": "..."}."""
