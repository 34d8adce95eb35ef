"""Chat templates end to end, through a real gateway process: a template that escapes
the sandbox or hangs cannot load (the gateway stops with a clear reason, no
traceback), and one that turns hostile on some message text costs that request a 400
within its time limit while the gateway keeps serving."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.support.ggufgen import write_bloom
from tests.support.server import GatewayProcess, model_config

CHATML = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
HOSTILE = {
    "exec": "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "import": "{% import 'os' as os %}{{ os }}",
    "include": "{% include '/etc/passwd' %}",
    "hang": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "memory": "{{ 'x' * 10**9 }}",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_gguf_template_stops_the_gateway_cleanly(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "pwned"
    gguf = write_bloom(
        tmp_path / "evil.gguf", chat_template=HOSTILE[name].replace("MARKER", str(marker))
    )
    options: dict[str, object] = {"model_path": str(gguf), "n_ctx": 128, "parallel": 1}
    options["template_timeout"] = 1
    config = tmp_path / "g.toml"
    config.write_text(model_config("evil", options))
    proc = GatewayProcess(config, tmp_path / "log").start(wait_ready=False)
    try:
        assert proc.wait(60) != 0
    finally:
        proc.stop()
    logs = proc.logs()
    assert "chat template fails on a 1-message test conversation" in logs, logs[-2000:]
    assert "Traceback" not in logs and "root:" not in logs
    assert not marker.exists()


def test_a_template_hostile_on_some_text_is_a_400_and_the_gateway_serves_on(
    tmp_path: Path,
) -> None:
    trap = (
        "{% if messages[-1].content == 'attack' %}{% for i in range(100000) %}"
        "{% for j in range(100000) %}{% endfor %}{% endfor %}{% endif %}"
    )
    gguf = write_bloom(tmp_path / "m.gguf")
    config = tmp_path / "g.toml"
    config.write_text(
        model_config("m", {"model_path": str(gguf), "n_ctx": 128, "parallel": 1})
        + f"chat_template = {json.dumps(trap + CHATML)}\ntemplate_timeout = 1\n"
    )
    with GatewayProcess(config, tmp_path / "log") as gw:
        url = f"{gw.base_url}/v1/chat/completions"
        started = time.monotonic()
        r = httpx.post(
            url,
            json={"model": "m", "messages": [{"role": "user", "content": "attack"}]},
            timeout=60,
        )
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "template_limit_exceeded" and error["param"] == "messages"
        assert "template_timeout" in error["message"]
        assert time.monotonic() - started < 30
        ok = httpx.post(
            url,
            json={"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]},
            timeout=60,
        )
        assert ok.status_code == 200, ok.text
        assert httpx.get(f"{gw.base_url}/health").status_code == 200
