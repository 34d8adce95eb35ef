"""The restart policy, the worker options, the error encoding on the wire, and how a
`[[models]]` entry chooses its isolation."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from backends import errors
from backends.worker import ProcessBackend, WorkerOptions, wire
from backends.worker.policy import RestartPolicy
from gateway.config import ConfigFileError, parse_config
from gateway.registry import ModelRegistry


def test_backoff_doubles_from_one_second_to_the_cap_then_gives_up() -> None:
    policy = RestartPolicy(WorkerOptions(restart_backoff_max=5, crash_limit=6, crash_window=100))
    delays = [policy.crashed(now, None) for now in range(5)]
    assert delays == [(False, 1), (False, 2), (False, 4), (False, 5), (False, 5)]
    assert policy.crashed(5, None) == (True, WorkerOptions().crashed_retry)


def test_a_stable_period_resets_the_backoff_and_old_crashes_leave_the_window() -> None:
    policy = RestartPolicy(WorkerOptions(stable_after=10, crash_limit=3, crash_window=50))
    assert policy.crashed(0, None) == (False, 1)
    assert policy.crashed(2, None) == (False, 2)
    # up for 60 s: the backoff starts again at 1 s and the two old crashes are forgotten
    assert policy.crashed(100, up_since=40) == (False, 1)
    assert policy.crashed(101, None) == (False, 2)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"restart_backoff_max": 0}, "restart_backoff_max"),
        ({"crash_limit": 0}, "crash_limit"),
        ({"crash_limit": 1.5}, "crash_limit"),
        ({"heartbeat_timeout": "5"}, "heartbeat_timeout"),
        ({"heartbeat_timeout": True}, "heartbeat_timeout"),
        ({"restarts": 3}, "restarts"),
    ],
)
def test_worker_options_are_checked(raw: dict[str, object], key: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        WorkerOptions.parse(raw)
    assert caught.value.key == key


def test_errors_cross_the_wire_as_the_same_class_with_their_fields() -> None:
    sent = errors.ContextLengthExceeded(100, 20, 64)
    got = wire.decode_error(wire.encode_error(sent))
    assert type(got) is errors.ContextLengthExceeded and str(got) == str(sent)
    assert (got.param, got.code, got.limit) == ("prompt", "context_length_exceeded", 64)
    overloaded = wire.decode_error(wire.encode_error(errors.Overloaded("busy", 3.0)))
    assert isinstance(overloaded, errors.Overloaded) and overloaded.retry_after == 3.0


def test_a_foreign_error_crosses_as_a_backend_error_naming_only_its_type() -> None:
    got = wire.decode_error(wire.encode_error(FileNotFoundError("/srv/secret/model.bin")))
    assert type(got) is errors.BackendError
    assert "secret" not in str(got) and "FileNotFoundError" in str(got)


def registry_for(entry: str, tiny_bloom_path: Path) -> ModelRegistry:
    text = f'[[models]]\nid = "m"\nbackend = "llama_cpp"\n{entry}\n'
    text += f'[models.options]\nmodel_path = "{tiny_bloom_path}"\n'
    config = parse_config(tomllib.loads(text), Path("g.toml"), {})
    return ModelRegistry.from_config(config)


def test_isolation_is_chosen_per_model(tiny_bloom_path: Path) -> None:
    plain = registry_for("", tiny_bloom_path).models[0].backend
    assert not isinstance(plain, ProcessBackend)  # llama_cpp's default: in-process
    isolated = registry_for('isolation = "process"', tiny_bloom_path).models[0].backend
    assert isinstance(isolated, ProcessBackend) and isolated.name == "llama_cpp"
    assert isolated.worker_status()["state"] == "starting"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('isolation = "thread"', 'models[0].isolation: must be "process" or "none"'),
        ("worker = 3", "models[0].worker: must be a table"),
        ("[models.worker]\ncrash_limit = 2", 'worker: needs isolation = "process"'),
        ('isolation = "process"\n[models.worker]\ncrash_limt = 2', "worker.crash_limt: unknown"),
    ],
)
def test_isolation_config_errors_name_the_key(
    entry: str, message: str, tiny_bloom_path: Path
) -> None:
    with pytest.raises(ConfigFileError, match=re.escape(message)):
        registry_for(entry, tiny_bloom_path)


def test_a_bad_option_fails_in_the_gateway_before_any_worker_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"options\.model_path"):
        registry_for('isolation = "process"', tmp_path / "missing.gguf")


def test_a_backend_s_own_error_class_crosses_as_its_nearest_known_class() -> None:
    class TemplateRefused(errors.InvalidRequest):
        pass

    got = wire.decode_error(wire.encode_error(TemplateRefused("no system role", "messages")))
    assert type(got) is errors.InvalidRequest
    assert (str(got), got.param) == ("no system role", "messages")
