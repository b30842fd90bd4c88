"""ZOConfig (``zolightning/config.py``): the settings of the ZO step and how a mapping becomes them."""

from __future__ import annotations

import pytest

from zolightning import ZOConfig


def test_an_unknown_option_names_the_close_one_and_every_option():
    with pytest.raises(TypeError, match=r"Unknown ZO option\(s\) \['sede'\] \(did you mean 'seed'\?\); the options are"):
        ZOConfig.coerce({"sede": 1})
    with pytest.raises(TypeError, match=r"\['clp', 'sede'\] \(did you mean 'clip' for 'clp', 'seed' for 'sede'\?\)"):
        ZOConfig.coerce({"sede": 1}, clp=2)
    with pytest.raises(TypeError, match=r"Unknown ZO option\(s\) \['qqqq'\]; the options are \[.*'seed'"):
        ZOConfig.coerce({"qqqq": 1})  # nothing close: no guess


def test_the_config_is_frozen_and_shared_by_the_module_and_its_engine():
    import dataclasses

    from zolightning import ZOLightningModule, as_zo

    config = ZOConfig(seed=3)
    assert ZOConfig.coerce(config) is config  # kept, not copied
    module = ZOLightningModule(zo=config)
    assert module.zo_config is module.zo_engine.config is config
    with pytest.raises(dataclasses.FrozenInstanceError):
        module.zo_config.seed = 4  # type: ignore[misc]
    changed = as_zo(module, seed=4)  # a change makes a new config (and a new engine with it)
    assert changed.zo_config.seed == 4 and changed.zo_config is changed.zo_engine.config and config.seed == 3
