"""Ollama's model listing (`/api/tags`, `/api/ps`), `/api/show` and `/api/version`,
built from what the gateway knows about each served model."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from backends.base import ModelInfo

# The Ollama API version whose shapes these endpoints follow (clients compare it).
OLLAMA_VERSION = "0.9.0"
STARTED = datetime(2024, 1, 1, tzinfo=UTC).isoformat().replace("+00:00", "Z")


def _details(info: ModelInfo | None) -> dict[str, Any]:
    details = info.details if info is not None else {}
    family = str(details.get("architecture") or details.get("family") or "")
    return {
        "parent_model": "",
        "format": "gguf" if info is not None and info.backend == "llama_cpp" else "",
        "family": family,
        "families": [family] if family else None,
        "parameter_size": "",
        "quantization_level": "",
    }


def model_entry(name: str, info: ModelInfo | None) -> dict[str, Any]:
    size = info.details.get("size_bytes", 0) if info is not None else 0
    return {
        "name": name,
        "model": name,
        "modified_at": STARTED,
        "size": size if isinstance(size, int) else 0,
        "digest": hashlib.sha256(name.encode()).hexdigest(),
        "details": _details(info),
    }


def tags_json(models: list[tuple[str, ModelInfo | None]]) -> dict[str, Any]:
    return {"models": [model_entry(name, info) for name, info in models]}


def ps_json(models: list[tuple[str, ModelInfo | None]]) -> dict[str, Any]:
    out = []
    for name, info in models:
        entry = model_entry(name, info)
        entry.update(expires_at="9999-12-31T23:59:59Z", size_vram=0)
        out.append(entry)
    return {"models": out}


def show_json(name: str, info: ModelInfo, chat_template: str | None) -> dict[str, Any]:
    caps = info.capabilities
    details = _details(info)
    capabilities = ["completion"]
    if caps.suffix:
        capabilities.append("insert")
    if "tools" in caps.features:
        capabilities.append("tools")
    model_info: dict[str, Any] = {"general.architecture": details["family"] or "unknown"}
    if caps.max_context is not None:
        model_info[f"{details['family'] or 'unknown'}.context_length"] = caps.max_context
    return {
        "modelfile": f"# served by llm-gateway\nFROM {name}\n",
        "parameters": "",
        "template": chat_template or "",
        "details": details,
        "model_info": model_info,
        "capabilities": capabilities,
        "modified_at": STARTED,
    }
