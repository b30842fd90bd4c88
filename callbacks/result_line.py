"""How the evaluation callbacks print their result lines: on a line of their own, also while a progress bar draws."""

from __future__ import annotations

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

__all__ = ["not_scored", "print_result"]


def not_scored(split: str = "test") -> str:
    """What a callback says instead of a score when the fit took no step (a finder's ``stop_after``): ``"the test set
    was not scored, because training stopped before its first step"`` (``split`` default ``"test"``)."""
    return f"the {split} set was not scored, because training stopped before its first step"


def print_result(trainer: Trainer, text: str) -> None:
    """Print ``text`` on global rank 0, starting on its own line.

    A plain ``print`` while a bar is on screen lands on the bar's line (``…val/acc=0.865]Held-out test accuracy…``):
    the bar's own ``print`` clears the bar, writes the line and draws the bar again below it.
    """
    if not trainer.is_global_zero:
        return
    bar = trainer.progress_bar_callback
    if bar is not None and _drawing(bar):
        bar.print(text)
    else:
        print(text, flush=True)


def _drawing(bar: ProgressBar) -> bool:
    """Whether ``bar`` prints through its own ``print``: a TQDM bar's ``print`` writes nothing once every one of its
    bars is closed (after ``on_train_end``), so only an open one counts."""
    if not isinstance(bar, TQDMProgressBar):
        return bar.is_enabled
    bars = [getattr(bar, f"_{stage}_progress_bar", None) for stage in ("train", "val", "test", "predict")]
    return any(tqdm is not None and not tqdm.disable for tqdm in bars)
