import pytest

from stages import cli, report
from stages.errors import StageError
from stages.report import summarize


def row(name: str, seed: int, accuracy: float, errors: int, epochs: int, state: str | None = "Success") -> dict:
    # The shape dvc.api.exp_show returns: flat keys, every number a float, a file prefix on clashes.
    return {"Experiment": name, "rev": "abc1234", "State": state, "train.seed": float(seed),
            "reports/metrics.json:test.accuracy": accuracy, "test.errors": float(errors),
            "robustness.mean": 0.6 + seed / 100, "robustness.held_out": 0.5 - seed / 100,
            "robustness.worst": 0.09,
            "epochs_run": float(epochs), "saved_epoch": float(epochs), "train_seconds": 100.0 + seed,
            "device": "cuda:1", "device_name": "NVIDIA H100 80GB HBM3", "precision": "fp32", "kernels": "-"}


def test_summary_numbers_on_known_input() -> None:
    table = summarize([row("a", 0, 0.9950, 50, 15), row("b", 1, 0.9940, 60, 14), row("c", 2, 0.9960, 40, 15)])
    lines = table.splitlines()
    assert lines[0] == ("| experiment | seed | test accuracy (%) | test errors | suite mean (%) | held-out mean (%) "
                        "| suite worst (%) | epochs run | saved epoch | train seconds | device | arithmetic |")
    assert lines[2] == ("| a | 0 | 99.50 | 50 | 60.0 | 50.0 | 9.0 | 15 | 15 | 100 "
                        "| cuda:1 (NVIDIA H100 80GB HBM3) | fp32 |")
    assert lines[5] == "| **mean** |  | 99.500 | 50.0 | 61.00 | 49.00 | 9.00 | 14.7 | 14.7 | 101.0 |  |  |"
    assert lines[6] == "| **std** |  | 0.100 | 10.0 | 1.00 | 1.00 | 0.00 | 0.6 | 0.6 | 1.0 |  |  |"
    assert lines[7] == "| **min** |  | 99.40 | 40 | 60.0 | 48.0 | 9.0 | 14 | 14 | 100 |  |  |"
    assert lines[8] == "| **max** |  | 99.60 | 60 | 62.0 | 50.0 | 9.0 | 15 | 15 | 102 |  |  |"
    assert lines[-1] == "2 of 3 reach >= 99.41% test accuracy."


def test_missing_metric_shows_a_dash_and_no_experiments_is_an_error() -> None:
    partial = row("a", 0, 0.99, 100, 3)
    del partial["test.errors"], partial["device"], partial["precision"], partial["robustness.mean"]
    assert "| a | 0 | 99.00 | - | - | 50.0 | 9.0 | 3 | 3 | 100 | - | - |" in summarize([partial])
    bf16 = summarize([{**row("b", 1, 0.99, 100, 3), "precision": "bf16", "kernels": "AVX512"}])
    assert ("| b | 1 | 99.00 | 100 | 61.0 | 49.0 | 9.0 | 3 | 3 | 101 "
            "| cuda:1 (NVIDIA H100 80GB HBM3) | bf16, AVX512 |") in bf16
    with pytest.raises(StageError, match="no finished experiments and no results in the workspace"):
        summarize([])


@pytest.fixture
def shown(monkeypatch) -> list[dict]:
    """What dvc.api.exp_show answers: a baseline row, then one finished, one failed and one running experiment."""
    import dvc.api

    rows = [{"Experiment": None, "rev": "workspace"}, row("done", 0, 0.995, 50, 15),
            row("broke", 1, 0.1, 0, 0, state="Failed"), row("going", 2, 0.5, 0, 1, state="Running")]
    monkeypatch.setattr(dvc.api, "exp_show", lambda **kwargs: rows)
    return rows


@pytest.mark.parametrize("argv, expected", [
    (["nope"], "error: no such experiment: nope (see `dvc exp show`"),
    (["done", "broke"], "error: broke is failed: no results yet (see `dvc queue status`, `dvc queue logs NAME`)"),
    (["going"], "error: going is running: no results yet"),
])
def test_bad_names_are_one_line_with_no_traceback(shown, capsys, argv, expected) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.run(report.main, report.parser(), argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(expected) and err.count("\n") == 1, err


def test_unnamed_report_leaves_out_unfinished_experiments_and_says_so(shown, capsys) -> None:
    report.main(report.parser().parse_args([]))
    out, err = capsys.readouterr()
    assert "| done |" in out and "broke" not in out and "going" not in out
    assert err == "left out, not finished: broke (failed), going (running)\n"


def test_no_experiments_at_all_is_one_line(shown, capsys) -> None:
    del shown[1:]
    with pytest.raises(SystemExit):
        cli.run(report.main, report.parser(), [])
    assert capsys.readouterr().err.startswith("error: no finished experiments and no results in the workspace "
                                              "to summarize (run the pipeline with `dvc repro`")


def test_after_a_plain_dvc_repro_the_report_is_the_workspaces_run(shown, capsys) -> None:
    shown[0].update(row(None, 0, 0.995, 50, 15), rev="workspace")
    del shown[1:]
    report.main(report.parser().parse_args([]))
    out, err = capsys.readouterr()
    assert "| workspace | 0 | 99.50 | 50 | 60.0 | 50.0 | 9.0 | 15 |" in out and "1 of 1 reach" in out
    assert err.startswith("no experiments of HEAD yet: this is the workspace's run (for more: `dvc exp run --queue")
    report.main(report.parser().parse_args(["workspace"]))
    assert "| workspace | 0 |" in capsys.readouterr().out


def test_outside_a_dvc_repository_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(report.main, report.parser(), [])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: dvc exp show: ") and "Traceback" not in err, err
