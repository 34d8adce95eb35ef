"""What the ctransformers backend refuses before the library ever reads a file: these
run in the pytest process because nothing here loads ctransformers' native code."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.ctransformers import CTransformersBackend
from backends.ctransformers.options import parse_options
from backends.errors import ConfigError
from tests.support.ctmodels import write_gpt2_ggml, write_llama_spm
from tests.support.ggufgen import write_bloom


def build(tmp_path: Path, **options: object) -> CTransformersBackend:
    return CTransformersBackend.from_config("m", options, tmp_path)


def test_a_missing_file_is_a_config_error_not_a_hub_lookup(tmp_path: Path) -> None:
    # ctransformers would take "TheBloke/x" for a repository id and go to the network
    with pytest.raises(ConfigError, match="model file not found") as caught:
        build(tmp_path, model_path="TheBloke/missing-GGML", model_type="gpt2")
    assert caught.value.key == "model_path"


def test_bloom_is_refused_saying_what_is_supported(tmp_path: Path) -> None:
    bloom = write_bloom(tmp_path / "b.gguf")
    with pytest.raises(ConfigError, match=r"cannot run BLOOM.*gpt2, gpt_bigcode"):
        build(tmp_path, model_path=str(bloom), model_type="llama")
    with pytest.raises(ConfigError, match="cannot run BLOOM") as caught:
        build(tmp_path, model_path=str(bloom), model_type="bloom")
    assert caught.value.key == "model_type"


def test_a_byte_level_bpe_llama_gguf_is_refused_with_the_convert_command(
    tmp_path: Path, smollm2_path: Path
) -> None:
    with pytest.raises(ConfigError, match="byte-level BPE") as caught:
        build(tmp_path, model_path=str(smollm2_path), model_type="llama")
    assert "gateway convert-for-ctransformers" in str(caught.value)


def test_the_supported_files_pass_the_checks(tmp_path: Path) -> None:
    gpt2 = write_gpt2_ggml(tmp_path / "g.bin")
    llama = write_llama_spm(tmp_path / "l.gguf")
    assert build(tmp_path, model_path=str(gpt2), model_type="gpt2").opts.lib == "avx2"
    backend = build(tmp_path, model_path="l.gguf", model_type="llama", lib="basic")
    assert backend.model_file == llama and backend.opts.lib == "basic"


def test_a_gguf_whose_architecture_differs_from_model_type_is_refused(tmp_path: Path) -> None:
    llama = write_llama_spm(tmp_path / "l.gguf")
    with pytest.raises(ConfigError, match="llama GGUF but model_type is 'falcon'"):
        build(tmp_path, model_path=str(llama), model_type="falcon")


def test_not_a_model_file(tmp_path: Path) -> None:
    junk = tmp_path / "x.bin"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ConfigError, match="not a GGML or GGUF model file"):
        build(tmp_path, model_path=str(junk), model_type="gpt2")


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({"batch_size": 65}, "batch_size", "at most 64"),
        ({"lib": "auto"}, "lib", "avx2, avx, basic, cuda"),
        ({"model_type": "gpt3"}, "model_type", "not supported"),
        ({"threads": 0}, "threads", ">= 1"),
        ({"gpu_layers": 4}, "gpu_layers", 'lib = "cuda"'),
        ({"n_ctx": 4}, "n_ctx", "unknown option"),
        ({"hf_repo": "a/b", "model_path": None}, "hf_file", "needs hf_file"),
    ],
)
def test_options_are_validated_naming_the_key(
    tmp_path: Path, options: dict[str, object], key: str, message: str
) -> None:
    values: dict[str, object] = {"model_path": "m.bin", "model_type": "gpt2", **options}
    values = {k: v for k, v in values.items() if v is not None}
    with pytest.raises(ConfigError, match=message) as caught:
        parse_options(values, tmp_path)
    assert caught.value.key == key


def test_model_type_is_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model_type is required") as caught:
        parse_options({"model_path": "m.bin"}, tmp_path)
    assert caught.value.key == "model_type"


def test_a_library_build_that_cannot_load_here_is_a_clean_backend_error(tmp_path: Path) -> None:
    # (no model is created: loading a shared library that is not there cannot crash)
    from backends.ctransformers.native import CtModel
    from backends.errors import BackendError

    gpt2 = write_gpt2_ggml(tmp_path / "g.bin")
    with pytest.raises(BackendError, match=r'cannot be loaded here.*lib = "basic"'):
        CtModel(gpt2, "gpt2", str(tmp_path / "no-such-build.so"), 1, 8, None, 0)
