import threading

import pytest
import torch

from zolightning.functional.noise import NOISE_CHUNK, fill_noise_, mix_seed
import zolightning.engine.noise_workers as _noise_workers_module
from zolightning.engine.noise_workers import default_noise_workers, drawing_noise, noise_workers, set_noise_workers


@pytest.fixture
def restore_workers():
    before = _noise_workers_module._workers
    yield
    set_noise_workers(before)


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_noise_does_not_depend_on_the_number_of_worker_threads(restore_workers, distribution):
    shape = (3 * NOISE_CHUNK + 17,)
    serial = fill_noise_(torch.empty(shape), 42, distribution)  # outside any block: the calling thread alone
    set_noise_workers(3)
    with drawing_noise():
        parallel = fill_noise_(torch.empty(shape), 42, distribution)
    assert torch.equal(serial, parallel)


def test_the_pool_draws_the_chunks_only_inside_a_drawing_block(restore_workers, monkeypatch):
    import zolightning.functional.noise as noise

    threads: list[str] = []
    original = noise._fill
    monkeypatch.setattr(noise, "_fill", lambda out, *a: threads.append(threading.current_thread().name)
                        or original(out, *a))
    set_noise_workers(2)
    fill_noise_(torch.empty(2 * NOISE_CHUNK), 1)
    assert threads and all(not name.startswith("zo-noise") for name in threads)
    threads.clear()
    with drawing_noise():
        fill_noise_(torch.empty(2 * NOISE_CHUNK), 1)
    assert threads and all(name.startswith("zo-noise") for name in threads)


def test_a_large_tensor_is_drawn_chunk_by_chunk_from_independent_streams():
    noise = fill_noise_(torch.empty(2 * NOISE_CHUNK), 7)
    first = fill_noise_(torch.empty(NOISE_CHUNK), mix_seed(7, 0))
    second = fill_noise_(torch.empty(NOISE_CHUNK), mix_seed(7, 1))
    assert torch.equal(noise[:NOISE_CHUNK], first) and torch.equal(noise[NOISE_CHUNK:], second)
    assert float(noise.std()) == pytest.approx(1.0, abs=0.01)


def test_a_bad_worker_count_is_refused_by_name():
    with pytest.raises(ValueError, match="`workers`"):
        set_noise_workers(0)


def test_default_workers_are_the_usable_cores_capped(restore_workers):
    assert default_noise_workers(cores=2) == 2
    assert default_noise_workers(cores=1) == 1
    assert default_noise_workers(cores=16) == 8
    set_noise_workers(None)
    assert noise_workers() == default_noise_workers()
    set_noise_workers(3)
    assert noise_workers() == 3
