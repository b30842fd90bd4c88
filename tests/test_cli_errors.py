"""The CLI's short errors (``zolightning/cli_errors.py``): the innermost problem of jsonargparse's nested report."""

from __future__ import annotations

from zolightning.cli_errors import accepted_options, innermost_instantiation_error, innermost_parse_error

# jsonargparse 4.53's report for `--model.init_args.zo.sede 1` on configs/smoke.yaml, as it reached the user.
ZO_TYPO = """Parser key "model":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'zolightning.module.ZOLightningModule'>, <class 'NoneType'>]
  Errors:
    - Problem with given class_path 'zolightning.tasks.SequenceClassificationTask':
        Parser key "zo":
          Does not validate against any of the Union subtypes
          Subtypes: [<class 'zolightning.config.ZOConfig'>, <class 'NoneType'>]
          Errors:
            - Problem with given class_path 'zolightning.ZOConfig':
                Option 'sede' is not accepted
            - Expected a <class 'NoneType'>
          Given value type: <class 'jsonargparse._util.NestedArg'>
          Given value: NestedArg(key='sede', val='1')
    - Expected a <class 'NoneType'>
  Given value type: <class 'jsonargparse._util.NestedArg'>
  Given value: NestedArg(key='zo.sede', val='1')"""

WRONG_TYPE = """Parser key "data":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'lightning.pytorch.core.datamodule.LightningDataModule'>, <class 'NoneType'>]
  Errors:
    - Problem with given class_path 'zolightning.tasks.TextClassificationDataModule':
        Parser key "padding_side":
          Expected a typing.Literal['right', 'left']. Got value: middle
    - Expected a <class 'NoneType'>
  Given value type: <class 'jsonargparse._util.NestedArg'>
  Given value: NestedArg(key='padding_side', val='middle')"""


def test_an_unknown_nested_key_reads_as_from_python_with_a_close_match():
    message = innermost_parse_error(ZO_TYPO)
    assert message.startswith("Unknown ZO option(s) ['sede'] (did you mean 'seed'?); the options are [")
    assert "\n" not in message


def test_a_refused_value_names_its_key_and_class():
    assert innermost_parse_error(WRONG_TYPE) == (
        "`padding_side` of TextClassificationDataModule: Expected a typing.Literal['right', 'left']. Got value: middle"
    )


def test_a_short_message_and_an_unknown_class_are_left_as_they_are():
    assert innermost_parse_error("unrecognized arguments: --x 1") == "unrecognized arguments: --x 1"
    unimportable = ZO_TYPO.replace("zolightning.ZOConfig", "nowhere.Missing")
    assert innermost_parse_error(unimportable) == "Missing: Option 'sede' is not accepted"
    assert accepted_options("nowhere.Missing") is None


def test_the_options_of_a_class_include_its_parents_where_it_passes_kwargs_on():
    assert "seed" in accepted_options("zolightning.ZOConfig")
    assert {"batch_size", "dataset"} <= set(accepted_options("zolightning.tasks.TextClassificationDataModule"))
    assert "zo" in accepted_options("tests.test_cli_errors.Child")


class Parent:
    def __init__(self, zo: int = 0) -> None:
        self.zo = zo


class Child(Parent):
    def __init__(self, width: int = 1, **kwargs: int) -> None:
        super().__init__(**kwargs)


def test_an_init_refusing_a_value_is_its_own_message_and_a_bug_is_no_config_error():
    refused = ValueError("`batch_size` must be a positive integer, got 0.")
    report = ValueError(
        "Does not validate against any of the Union subtypes\nErrors:\n  - `batch_size` must be ...\n"
        "Given value: Namespace(class_path='zolightning.tasks.TextClassificationDataModule', init_args=Namespace())"
    )
    report.__cause__ = refused
    assert innermost_instantiation_error(report) == (
        "TextClassificationDataModule: `batch_size` must be a positive integer, got 0.", refused
    )
    assert innermost_instantiation_error(ValueError("anything else")) is None
