"""Result lines (HeldOutEvaluation, DevSelection, PeakMemory) start on a line of their own, progress bar or not."""

from __future__ import annotations

import re
from types import SimpleNamespace

from lightning.pytorch import Trainer

from tests.callbacks.test_held_out_evaluation import BlobData, Classifier
from tests.conftest import trainer_kwargs
from zolightning.callbacks import DevSelection, HeldOutEvaluation, PeakMemory, ZOProgressBar
from zolightning.callbacks.result_line import print_result


def test_result_lines_are_never_glued_to_the_progress_bar(capsys, tmp_path):
    callbacks = [HeldOutEvaluation(), DevSelection(every_n_steps=2), PeakMemory(), ZOProgressBar()]
    kwargs = trainer_kwargs(enable_progress_bar=True, default_root_dir=tmp_path)
    Trainer(max_steps=4, callbacks=callbacks, limit_val_batches=0, **kwargs).fit(Classifier(), datamodule=BlobData())
    out = capsys.readouterr().out
    for result in ("Held-out test accuracy", "dev @ step 2", "dev @ step 4", "Selected on dev", "Peak memory"):
        assert result in out, result
        # Was `…it/s=12.3]Held-out test accuracy…`: the line printed after the bar's figures, on the bar's line. A
        # result starts a line, or follows the `\r` with which the bar cleared its own line.
        assert not re.search(rf"[^\n\r]{re.escape(result)}", out), (result, out)


def test_without_a_progress_bar_a_result_is_a_plain_line_and_only_rank_zero_prints(capsys):
    print_result(SimpleNamespace(is_global_zero=True, progress_bar_callback=None), "Held-out: 1%")
    print_result(SimpleNamespace(is_global_zero=False, progress_bar_callback=None), "rank 1")
    assert capsys.readouterr().out == "Held-out: 1%\n"
