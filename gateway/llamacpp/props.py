"""llama.cpp server's `GET /props`: what editors read to size their requests (the
context per slot, the slots, the default sampling) and the chat template."""

from __future__ import annotations

from typing import Any

from backends.base import ModelInfo


def props_json(model: str, info: ModelInfo, chat_template: str | None) -> dict[str, Any]:
    n_ctx = info.capabilities.max_context
    slots = info.details.get("parallel")
    return {
        "default_generation_settings": {
            "id": 0,
            "id_task": -1,
            "n_ctx": n_ctx,
            "is_processing": False,
            "params": {
                "n_predict": -1,
                "temperature": 0.8,
                "top_k": 40,
                "top_p": 0.95,
                "min_p": 0.05,
                "stream": False,
            },
        },
        "total_slots": slots if isinstance(slots, int) else 1,
        "model_alias": model,
        "model_path": model,  # the model's name: file paths are not shown to clients
        "chat_template": chat_template or "",
        "modalities": {"vision": False, "audio": False},
        "infill": info.capabilities.suffix,
        "build_info": "llm-gateway",
    }
