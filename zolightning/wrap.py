"""``as_zo``: switch an existing LightningModule instance to zeroth-order training."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch import LightningModule

from zolightning.config import ZOConfig
from zolightning.module import ZOLightningModule

_ZO_CLASSES: dict[type, type] = {}


def zo_class_for(cls: type[LightningModule]) -> type[ZOLightningModule]:
    """The ZO subclass of ``cls`` (made once per class): ``cls``'s methods first, the ZO machinery after them,
    and ``cls.training_step`` wrapped into a ZO step."""
    if issubclass(cls, ZOLightningModule):
        return cls
    if cls not in _ZO_CLASSES:
        namespace = {"__module__": cls.__module__, "__qualname__": f"ZO[{cls.__qualname__}]", "__reduce_ex__": _reduce_ex}
        _ZO_CLASSES[cls] = type(f"ZO{cls.__name__}", (cls, ZOLightningModule), namespace)
    return _ZO_CLASSES[cls]


def _reduce_ex(self: ZOLightningModule, protocol: int) -> tuple[Any, ...]:
    # The generated class cannot be found by name in another process (``ddp_spawn`` pickles the module), so pickle
    # the instance as "the ZO class of its original class" and rebuild that class on the other side.
    reduced = object.__reduce_ex__(self, protocol)
    original = type(self).__mro__[1]
    return (_rebuild, (original,), *reduced[2:])


def _rebuild(original: type[LightningModule]) -> ZOLightningModule:
    cls = zo_class_for(original)
    return cls.__new__(cls)


def as_zo(
    module: LightningModule, zo: ZOConfig | Mapping[str, Any] | None = None, **options: Any
) -> ZOLightningModule:
    """Switch ``module`` to ZO training in place and return it.

    Its ``training_step`` (which must return the loss) becomes the objective of a seeded two-point step; its
    ``configure_optimizers``, validation and test steps are kept. A module without ``configure_optimizers`` gets
    :class:`~zolightning.optim.ZOSGD` with ``lr``/``eps`` from the options. On a module that is already ZO, the new
    settings replace the old ones (structures installed by hand are reset: install them after ``as_zo``).

    Args:
        module: a LightningModule instance (already constructed).
        zo: a :class:`ZOConfig` or mapping; ``options`` (the same field names, e.g. ``eps=1e-3, seed=0``) override it.

    Example::

        model = as_zo(MyLitModel(), eps=1e-3, lr=1e-6)
        Trainer(max_steps=1000).fit(model, datamodule)
    """
    if not isinstance(module, LightningModule):
        raise TypeError(f"as_zo expects a LightningModule instance, got {type(module).__name__}.")
    config = ZOConfig.coerce(zo, **options)
    if not isinstance(module, ZOLightningModule):
        module.__class__ = zo_class_for(type(module))
    # Re-initialized as a whole, so that every setting (the noise distribution included) takes effect at once.
    module._init_zo(config)  # type: ignore[attr-defined]
    return module  # type: ignore[return-value]
