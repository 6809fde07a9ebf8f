"""evaluate's robustness figures: each corruption's accuracy, their mean and the worst, from the suite's file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stages import cli, config, corrupt, corruptions, data, evaluate, infer
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
    torch.save({"state_dict": Net().state_dict(), "epoch": 1, "val_accuracy": 0.5,
                "params": config.load(project / "params.yaml").model_dump()}, project / "models" / "model.pt")
    cli.run(corrupt.main, corrupt.parser(), [])
    cli.run(evaluate.main, evaluate.parser(), [])
    out = capsys.readouterr().out
    metrics = json.loads((project / "reports/metrics.json").read_text())
    details = json.loads((project / "reports/eval/details.json").read_text())
    rows = json.loads((project / "reports/eval/robustness.json").read_text())
    names = [r["corruption"] for r in rows]
    # The headline that `dvc metrics show` prints; everything else in details.json and the plot rows.
    assert metrics == {"test": {"accuracy": metrics["test"]["accuracy"], "one_pass": metrics["test"]["one_pass"]},
                       "robustness": {"mean": round(sum(r["accuracy"] for r in rows) / 21, 4),
                                      "worst": min(r["accuracy"] for r in rows)}}
    assert len(names) == 21 and details["robustness"]["worst_corruption"] in names
    worst_row = next(r for r in rows if r["corruption"] == details["robustness"]["worst_corruption"])
    assert worst_row["accuracy"] == metrics["robustness"]["worst"]
    held_out = [r["accuracy"] for r in rows if r["corruption"] in corruptions.HELD_OUT]
    assert len(held_out) == 10 and details["robustness"]["held_out"] == round(sum(held_out) / 10, 4)
    assert details["test"]["errors"] == round((1 - metrics["test"]["accuracy"]) * 100)
    assert details["test"]["one_pass_errors"] == round((1 - metrics["test"]["one_pass"]) * 100)
    assert f"over 21 corruptions of 100 test images, worst {metrics['robustness']['worst']:.2%}" in out


def test_one_pass_is_the_image_alone_and_accuracy_averages_the_shifts() -> None:
    # A model whose answer depends on where the ink is: the shifted copies can change it, one pass cannot.
    torch.manual_seed(0)
    model = Net().eval()
    images, labels = make_images(200, seed=5)
    x = data.normalize(images)
    figures, _, rows = evaluate.evaluate(model=model, images=x, labels=labels.long())
    with torch.no_grad():
        alone = model(x).argmax(1)
        shifted = sum(model(torch.roll(x, s, dims=(2, 3))).softmax(1) for s in infer.TTA_SHIFTS).argmax(1)
    assert (alone != shifted).any(), "the case must tell the two apart"
    assert figures["test"]["one_pass"] == int((alone == labels).sum()) / 200
    assert figures["test"]["accuracy"] == int((shifted == labels).sum()) / 200
    assert [r["predicted"] for r in rows] == shifted.tolist()
    assert figures["test"]["one_pass_errors"] == int((alone != labels).sum())


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
