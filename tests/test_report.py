import pytest

from stages import cli, report
from stages.errors import StageError
from stages.report import summarize


def row(name: str, seed: int, accuracy: float, one_pass: float, epochs: int, state: str | None = "Success") -> dict:
    # The shape dvc.api.exp_show returns: flat keys, every number a float, a file prefix on clashes.
    return {"Experiment": name, "rev": "abc1234", "State": state, "train.seed": float(seed),
            "reports/metrics.json:test.accuracy": accuracy, "test.one_pass": one_pass,
            "robustness.mean": 0.6 + seed / 100, "robustness.worst": 0.09,
            "epochs_run": float(epochs), "train_seconds": 100.0 + seed, "device": "cuda:1"}


def test_summary_numbers_on_known_input() -> None:
    table = summarize([row("a", 0, 0.9950, 0.9945, 15), row("b", 1, 0.9940, 0.9930, 14),
                       row("c", 2, 0.9960, 0.9941, 15)])
    lines = table.splitlines()
    assert lines[0] == ("| experiment | seed | test accuracy (%) | one pass (%) | suite mean (%) | suite worst (%) "
                        "| epochs run | train seconds | device |")
    assert lines[2] == "| a | 0 | 99.50 | 99.45 | 60.0 | 9.0 | 15 | 100 | cuda:1 |"
    assert lines[5] == "| **mean** |  | 99.500 | 99.387 | 61.00 | 9.00 | 14.7 | 101.0 |  |"
    assert lines[6] == "| **std** |  | 0.100 | 0.078 | 1.00 | 0.00 | 0.6 | 1.0 |  |"
    assert lines[7] == "| **min** |  | 99.40 | 99.30 | 60.0 | 9.0 | 14 | 100 |  |"
    assert lines[8] == "| **max** |  | 99.60 | 99.45 | 62.0 | 9.0 | 15 | 102 |  |"
    assert lines[-1] == "2 of 3 reach >= 99.41% test accuracy (in one pass: 2 of 3)."


def test_missing_metric_shows_a_dash_and_no_experiments_is_an_error() -> None:
    partial = row("a", 0, 0.99, 0.98, 3)
    del partial["test.one_pass"], partial["device"], partial["robustness.mean"]
    assert "| a | 0 | 99.00 | - | - | 9.0 | 3 | 100 | - |" in summarize([partial])
    with pytest.raises(StageError, match="no finished experiments and no results in the workspace"):
        summarize([])


@pytest.fixture
def shown(monkeypatch) -> list[dict]:
    """What dvc.api.exp_show answers: a baseline row, then one finished, one failed and one running experiment."""
    import dvc.api

    rows = [{"Experiment": None, "rev": "workspace"}, row("done", 0, 0.995, 0.994, 15),
            row("broke", 1, 0.1, 0.1, 0, state="Failed"), row("going", 2, 0.5, 0.5, 1, state="Running")]
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
    shown[0].update(row(None, 0, 0.995, 0.994, 15), rev="workspace")
    del shown[1:]
    report.main(report.parser().parse_args([]))
    out, err = capsys.readouterr()
    assert "| workspace | 0 | 99.50 | 99.40 | 60.0 | 9.0 | 15 |" in out and "1 of 1 reach" in out
    assert err.startswith("no experiments of HEAD yet: this is the workspace's run (for more: `dvc exp run --queue")
    report.main(report.parser().parse_args(["workspace"]))
    assert "| workspace | 0 |" in capsys.readouterr().out


def test_outside_a_dvc_repository_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(report.main, report.parser(), [])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: dvc exp show: ") and "Traceback" not in err, err
