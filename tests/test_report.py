import pytest

from stages.report import summarize
from stages.cli import StageError


def row(name: str, seed: int, accuracy: float, errors: int, epochs: int) -> dict:
    # The shape dvc.api.exp_show returns: flat keys, every number a float, a file prefix on clashes.
    return {"Experiment": name, "rev": "abc1234", "train.seed": float(seed),
            "reports/metrics.json:test.accuracy": accuracy, "test.errors": float(errors),
            "epochs_run": float(epochs), "saved_epoch": float(epochs), "train_seconds": 100.0 + seed}


def test_summary_numbers_on_known_input() -> None:
    table = summarize([row("a", 0, 0.9950, 50, 15), row("b", 1, 0.9940, 60, 14), row("c", 2, 0.9960, 40, 15)])
    lines = table.splitlines()
    assert lines[0] == ("| experiment | seed | test accuracy (%) | test errors | epochs run | saved epoch "
                        "| train seconds |")
    assert lines[2] == "| a | 0 | 99.50 | 50 | 15 | 15 | 100 |"
    assert lines[5] == "| **mean** |  | 99.500 | 50.0 | 14.7 | 14.7 | 101.0 |"
    assert lines[6] == "| **std** |  | 0.100 | 10.0 | 0.6 | 0.6 | 1.0 |"
    assert lines[7] == "| **min** |  | 99.40 | 40 | 14 | 14 | 100 |"
    assert lines[8] == "| **max** |  | 99.60 | 60 | 15 | 15 | 102 |"


def test_missing_metric_shows_a_dash_and_no_experiments_is_an_error() -> None:
    partial = row("a", 0, 0.99, 100, 3)
    del partial["test.errors"]
    assert "| a | 0 | 99.00 | - | 3 | 3 | 100 |" in summarize([partial])
    with pytest.raises(StageError, match="no experiments to summarize"):
        summarize([])
