"""A fast-loading copy of a GGUF model: dequantize once, keep the fp32 weights and tokenizer as a normal folder.

Loading SmolLM2-135M from its GGUF file dequantizes 272 tensors (about 20 s on 2 cores); the converted folder
loads in well under a second. The copy lives under ``$ZOLIGHTNING_CACHE`` (default ``~/.cache/zolightning``), in a
folder named after the GGUF file's stem and a hash of its size and content: every install of the same file (another
virtual environment, a reinstall, a copy) shares one copy, and a changed file gets a new one. It is written to a
temporary folder and renamed into place, so an interrupted conversion never leaves a half copy.

The conversion draws no random numbers from the caller's generators (torch's CPU generator, ``random``, numpy): a
run seeded before loading the model (``seed_everything``, then a LoRA initialisation) gets the same weights whether
this call converted the file or found the copy.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

__all__ = ["cache_root", "content_digest", "copy_folder_for", "fast_copy_of_gguf", "preserved_global_rng"]

_CHUNK = 1 << 20
# (path, size, mtime, inode) → digest: a run asks for the same file several times (model, tokenizer, label words),
# and hashing 93 MB costs about 0.3 s each time; a file changed in place changes its mtime, so it is hashed again.
_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def cache_root() -> Path:
    """Where converted models are kept: ``$ZOLIGHTNING_CACHE``, else ``~/.cache/zolightning``."""
    return Path(os.environ.get("ZOLIGHTNING_CACHE") or Path.home() / ".cache" / "zolightning")


def content_digest(path: Path) -> str:
    """The sha256 (hex) of the file's size and bytes; remembered for this process while its size, mtime and inode
    stay the same."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if memo not in _DIGESTS:
        digest = hashlib.sha256(f"{stat.st_size}:".encode())
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        _DIGESTS[memo] = digest.hexdigest()
    return _DIGESTS[memo]


def copy_folder_for(path: Path) -> Path:
    """Where the copy of the GGUF file ``path`` lives: ``<cache_root>/<stem>-<12 hex digits of its content hash>``.

    The key is the content, not the path or modification time: every install of the same file finds the same copy
    (a key with the mtime made each install convert again and keep another 517 MB copy of SmolLM2).
    """
    return cache_root() / f"{path.stem}-{content_digest(path)[:12]}"


@contextmanager
def preserved_global_rng() -> Iterator[None]:
    """Run the body, then put back the states of torch's CPU generator, ``random`` and numpy's global generator.

    Why: building a model from its config initialises weights from the global generator before they are
    overwritten, so a conversion that runs after ``seed_everything`` would shift every later draw (the LoRA
    initialisation) on the first run only.
    """
    torch_state = torch.random.get_rng_state()
    python_state = random.getstate()
    try:
        import numpy
    except ModuleNotFoundError:  # numpy is optional here: nothing to keep then
        numpy = None  # type: ignore[assignment]
    numpy_state = numpy.random.get_state() if numpy is not None else None
    try:
        yield
    finally:
        torch.random.set_rng_state(torch_state)
        random.setstate(python_state)
        if numpy is not None:
            numpy.random.set_state(numpy_state)


def fast_copy_of_gguf(path: str | Path) -> Path:
    """The folder of the fp32 copy of the GGUF model at ``path`` (weights, config, tokenizer), made on first use.

    Raises:
        FileNotFoundError: no file at ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No GGUF file at {path}.")
    target = copy_folder_for(path)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with preserved_global_rng():
            _convert(path, staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # another process did not win the race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert(path: Path, folder: Path) -> None:
    """Write the fp32 weights, config and tokenizer of the GGUF model at ``path`` into ``folder``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantized = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # A GGUF-loaded model refuses `save_pretrained`; a plain model of the same config takes its weights.
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.save_pretrained(folder)
    AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(folder)
