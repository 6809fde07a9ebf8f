"""The training arithmetic follows params.yaml alone; `python -m stages.precision` advises, decides nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stages import config, precision
from stages.errors import ParamsError, StageError
from stages.step import autocast_dtype
from tests.helpers import REPO, default_train, set_key


def test_precision_is_what_params_yaml_says_on_every_device() -> None:
    assert autocast_dtype("fp32", torch.device("cpu")) is None
    assert autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    assert autocast_dtype("fp32", torch.device("cuda")) is None
    assert autocast_dtype("bf16", torch.device("cuda")) is torch.bfloat16
    assert autocast_dtype("fp32", torch.device("mps")) is None
    with pytest.raises(StageError, match="'bf16' is not trained on MPS"):
        autocast_dtype("bf16", torch.device("mps"))


def test_the_default_is_fp32_and_the_old_auto_is_refused_in_one_line() -> None:
    assert default_train().precision == "fp32" == config.Train().precision
    raw = set_key(config.read_yaml(REPO / "params.yaml"), "train.precision", "auto")
    with pytest.raises(ParamsError) as err:
        config.parse(raw)
    assert str(err.value) == "params.yaml: train.precision: 'auto' is not one of 'fp32', 'bf16'"


@pytest.mark.parametrize("speedup, today, expected", [
    (0.30, "fp32", "bf16 is 0.30x as fast as fp32 here (below 1.05x): keep train.precision: fp32"),  # AVX2
    (1.04, "fp32", "keep train.precision: fp32"),  # within noise
    (1.05, "fp32", "set train.precision: bf16 (`dvc exp run -S train.precision=bf16` to compare"),  # the bar
    (1.33, "bf16", "bf16 is 1.33x as fast as fp32 here (at least 1.05x): keep train.precision: bf16"),  # AMX
    (0.79, "bf16", "set train.precision: fp32"),  # a Xeon whose AMX the hypervisor hides
])
def test_the_advice_follows_the_measured_ratio_and_names_the_setting(speedup: float, today: str,
                                                                     expected: str) -> None:
    assert expected in precision.advice(speedup, today)


def test_the_probe_times_both_arithmetics_on_this_cpu() -> None:
    timing = precision.measure(default_train().model_copy(update={"batch_size": 16}), rounds=1)
    assert timing["fp32_step_ms"] > 0 and timing["bf16_step_ms"] > 0
    assert timing["bf16_speedup"] == pytest.approx(timing["fp32_step_ms"] / timing["bf16_step_ms"], abs=2e-3)


def test_the_advisor_writes_nothing_and_the_train_stage_records_what_params_yaml_chose(
        project: Path, monkeypatch, capsys) -> None:
    from stages import train as train_stage

    monkeypatch.setattr(precision, "measure", lambda cfg: {"fp32_step_ms": 12.0, "bf16_step_ms": 10.0,
                                                           "bf16_speedup": 1.2})
    before = sorted(p for p in project.rglob("*"))
    precision.main(precision.parser().parse_args([]))
    out = capsys.readouterr().out
    assert "a step: fp32 12.0 ms, bf16 10.0 ms" in out and "set train.precision: bf16" in out
    assert sorted(p for p in project.rglob("*")) == before
    # Advised bf16 or not, the stage trains in what params.yaml says.
    train_stage.main(train_stage.parser().parse_args([]))
    run = json.loads((project / "reports" / "train" / "run.json").read_text())
    assert run["precision"] == "fp32" and "bf16_speedup" not in run
    assert ", float32, " in capsys.readouterr().out
