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
