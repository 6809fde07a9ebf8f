"""evaluate's robustness figures: each corruption's accuracy, their mean and the worst, from the suite's file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stages import cli, corrupt, corruptions, data, evaluate
from stages.model import Net
from tests.helpers import make_images


def test_robustness_scores_each_corruption_of_the_suite_alone() -> None:
    torch.manual_seed(0)
    model = Net().eval()
    images, labels = make_images(40, seed=4)
    suite = {"indices": torch.arange(40), "labels": labels.long(),
             "clean": images, "fog": 255 - images, "blank": torch.zeros_like(images)}
    summary, rows = evaluate.robustness(model=model, suite=suite)
    with torch.no_grad():
        expected = {name: round(float((model(data.normalize(suite[name])).argmax(1) == labels).float().mean()), 4)
                    for name in ("clean", "fog", "blank")}
    assert rows == [{"corruption": name, "accuracy": value} for name, value in expected.items()]
    # fog is the only one of the held-out group (corruptions.HELD_OUT) in this suite
    assert summary == {"mean": round(sum(expected.values()) / 3, 4), "held_out": expected["fog"],
                       "worst": min(expected.values()), **expected}


def test_evaluate_writes_the_suite_into_the_metrics_and_the_plot_rows(project: Path, capsys) -> None:
    torch.manual_seed(0)
    (project / "models").mkdir()
    torch.save({"state_dict": Net().state_dict(), "epoch": 1}, project / "models" / "model.pt")
    cli.run(corrupt.main, corrupt.parser(), [])
    cli.run(evaluate.main, evaluate.parser(), [])
    out = capsys.readouterr().out
    metrics = json.loads((project / "reports/metrics.json").read_text())
    rows = json.loads((project / "reports/eval/robustness.json").read_text())
    names = [r["corruption"] for r in rows]
    assert len(names) == 21 and set(metrics["robustness"]) == {"mean", "held_out", "worst", *names}
    assert metrics["robustness"]["worst"] == min(r["accuracy"] for r in rows)
    held_out = [r["accuracy"] for r in rows if r["corruption"] in corruptions.HELD_OUT]
    assert len(held_out) == 10 and metrics["robustness"]["held_out"] == round(sum(held_out) / 10, 4)
    assert f"over 21 corruptions of 100 test images, worst {metrics['robustness']['worst']:.2%}" in out


@pytest.mark.parametrize("content, expected", [
    (None, "data/suite/test.pt: missing (run `dvc repro corrupt` first)"),
    (b"not a pickle", "data/suite/test.pt: not the `corrupt` stage's suite (UnpicklingError); make it again"),
    ({"labels": torch.zeros(3)}, "data/suite/test.pt: not the `corrupt` stage's suite; make it again"),
])
def test_a_missing_or_damaged_suite_stops_evaluate(project: Path, capsys, content, expected) -> None:
    from tests.test_errors import fails

    (project / "models").mkdir()
    torch.save({"state_dict": Net().state_dict()}, project / "models" / "model.pt")
    suite = project / "data" / "suite" / "test.pt"
    suite.parent.mkdir()
    if isinstance(content, bytes):
        suite.write_bytes(content)
    elif content is not None:
        torch.save(content, suite)
    fails(project, evaluate, capsys, expected)
