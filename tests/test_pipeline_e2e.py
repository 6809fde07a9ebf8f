"""End to end: a temporary git + DVC repository, tiny generated MNIST served via MNIST_DIR, real `dvc` commands."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.browser import CHROMIUM, open_page
from tests.e2e import sh
from tests.helpers import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("pipeline_e2e")]  # one test process, one repository


def test_repro_writes_every_output(dvc_repo) -> None:
    repo, _ = dvc_repo
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert set(metrics["test"]) == {"accuracy", "one_pass"} and set(metrics["robustness"]) == {"mean", "worst"}
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0 and 0.0 <= metrics["test"]["one_pass"] <= 1.0
    details = json.loads((repo / "reports/eval/details.json").read_text())
    assert details["test"]["errors"] == round((1 - metrics["test"]["accuracy"]) * 100)
    per_class = json.loads((repo / "reports/eval/per_class.json").read_text())
    assert [row["digit"] for row in per_class] == [str(d) for d in range(10)]
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in per_class)
    per_corruption = json.loads((repo / "reports/eval/robustness.json").read_text())
    names = [r["corruption"] for r in per_corruption]
    assert len(names) == 21 and details["robustness"]["worst_corruption"] in names
    checkpoint = torch.load(repo / "models/model.pt", weights_only=True)
    assert {"state_dict", "epoch", "val_accuracy", "params"} <= set(checkpoint)
    assert checkpoint["params"]["train"]["epochs"] == 2
    summary = json.loads((repo / "reports/train/metrics.json").read_text())
    assert summary["epochs_run"] == 2 and summary["device"] == "cpu"
    assert json.loads((repo / "reports/train/run.json").read_text())["device_name"]
    for png in ("training_curves", "confusion_matrix", "misclassified", "robustness_suite"):
        assert (repo / f"reports/plots/{png}.png").read_bytes()[:4] == b"\x89PNG"
    assert "Total params: 9,802" in (repo / "reports/train/model_summary.txt").read_text()


def test_the_onnx_export_answers_as_the_model_does_in_onnxruntime(dvc_repo) -> None:
    import onnxruntime

    from stages import data
    from stages.infer import load_checkpoint, logits

    repo, _ = dvc_repo
    session = onnxruntime.InferenceSession(repo / "models/model.onnx", providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("image", ["batch", 1, 28, 28])]
    images, labels = data.load(repo / "data/raw", "test", torch.device("cpu"))
    onnx_logits = torch.from_numpy(session.run(["logits"], {"image": images.numpy()})[0])
    model, _ = load_checkpoint(repo / "models/model.pt", torch.device("cpu"))
    assert (onnx_logits - logits(model, images)).abs().max() < 1e-4
    # Its single pass over the test images is the one `evaluate` reports.
    one_pass = json.loads((repo / "reports/metrics.json").read_text())["test"]["one_pass"]
    assert int((onnx_logits.argmax(1) == labels).sum()) / len(labels) == one_pass
    assert "mnist-cnn-onnx" in yaml.safe_load((repo / "dvc.yaml").read_text())["artifacts"]


def test_the_model_card_holds_this_runs_figures(dvc_repo) -> None:
    repo, _ = dvc_repo
    card = (repo / "reports/model_card.md").read_text()
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    details = json.loads((repo / "reports/eval/details.json").read_text())
    checkpoint = torch.load(repo / "models/model.pt", weights_only=True)
    test = metrics["test"]
    assert (f"| {100 * test['accuracy']:.2f} % | {details['test']['errors']} |" in card
            and f"| {100 * test['one_pass']:.2f} % | {details['test']['one_pass_errors']} |" in card)
    robustness = metrics["robustness"]
    assert f"Mean {100 * robustness['mean']:.2f} %; worst {100 * robustness['worst']:.2f} % " \
           f"({details['robustness']['worst_corruption']})" in card
    assert f"{100 * details['robustness']['held_out']:.2f} %." in card
    per_class = json.loads((repo / "reports/eval/per_class.json").read_text())
    assert "| accuracy | " + " | ".join(f"{100 * r['accuracy']:.2f} %" for r in per_class) + " |" in card
    assert f"epoch {checkpoint['epoch']}, chosen on the" in card and "9,802 trainable" in card
    assert f"seed {checkpoint['params']['train']['seed']};" in card


def test_outputs_are_dvc_tracked_not_in_git(dvc_repo) -> None:
    repo, env = dvc_repo
    tracked = sh(repo, "git", "ls-files", env=env).split()
    assert "dvc.lock" in tracked
    assert not [f for f in tracked if f.startswith(("data/raw", "data/suite", "models/", "reports/"))
                and not f.endswith(".gitignore")]


def test_second_repro_does_nothing(dvc_repo) -> None:
    repo, env = dvc_repo
    out = sh(repo, "dvc", "repro", env=env)
    assert "Data and pipelines are up to date." in out
    assert "Running stage" not in out


def test_report_after_a_plain_repro_summarizes_the_workspaces_run(dvc_repo) -> None:
    repo, env = dvc_repo
    if sh(repo, "git", "for-each-ref", "refs/exps", env=env).strip():
        pytest.skip("experiments of this repository already exist (this test runs before the first one)")
    done = subprocess.run([sys.executable, "-m", "stages.report"], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    accuracy = json.loads((repo / "reports/metrics.json").read_text())["test"]["accuracy"]
    assert f"| workspace | 0 | {accuracy * 100:.2f} |" in done.stdout
    assert done.stderr.startswith("no experiments of HEAD yet: this is the workspace's run")


def outputs(repo: Path) -> dict[str, str]:
    """MD5 of every file under models/ and reports/."""
    return {str(p.relative_to(repo)): hashlib.md5(p.read_bytes()).hexdigest()
            for d in ("models", "reports") for p in sorted((repo / d).rglob("*")) if p.is_file()}


def test_bad_param_through_the_front_door_changes_no_output(dvc_repo) -> None:
    repo, env = dvc_repo
    before = outputs(repo)
    assert "models/model.pt" in before and "reports/metrics.json" in before
    done = subprocess.run(["dvc", "exp", "run", "-S", "train.lr=-1"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: params.yaml: train.lr: must be a number > 0; no stage ran and no output changed "
                      "(fix params.yaml, or undo the edit with `git checkout params.yaml`)"], done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "Running stage 'train'" not in done.stdout
    assert outputs(repo) == before
    # DVC may leave its -S value in params.yaml (in some runs it did, in others its clean-up restored the
    # file); the command the error names undoes it, and then nothing is left to run.
    sh(repo, "git", "checkout", "params.yaml", env=env)
    assert sh(repo, "git", "status", "--porcelain", "params.yaml", env=env) == ""
    out = sh(repo, "dvc", "repro", env=env)
    assert "Data and pipelines are up to date." in out and "Running stage" not in out
    assert outputs(repo) == before


def test_metrics_show_prints_the_headline_within_140_columns(dvc_repo) -> None:
    repo, env = dvc_repo
    out = sh(repo, "dvc", "metrics", "show", env=env)
    assert max(len(line) for line in out.splitlines()) <= 140, out
    for column in ("test.accuracy", "test.one_pass", "robustness.mean", "robustness.worst", "epochs_run",
                   "train_seconds", "device"):
        assert column in out, column
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    shown = json.loads(sh(repo, "dvc", "metrics", "show", "--json", env=env))
    assert shown[""]["data"]["reports/metrics.json"]["data"] == metrics
    assert str(round(metrics["test"]["accuracy"], 5)) in out and str(round(metrics["robustness"]["mean"], 5)) in out


def test_changing_a_plots_param_reruns_only_plots(dvc_repo) -> None:
    repo, env = dvc_repo
    out = sh(repo, "dvc", "exp", "run", "-S", "plots.dpi=50", env=env)
    assert "Running stage 'plots'" in out
    assert "Running stage 'train'" not in out and "Running stage 'evaluate'" not in out


def test_experiment_with_adam_compares_in_exp_show_and_plots_diff(dvc_repo) -> None:
    repo, env = dvc_repo
    out = sh(repo, "dvc", "exp", "run", "-n", "adam-e2e", "-S", "train.optimizer=adam", "-S", "train.lr=0.003",
             env=env)
    assert "Running stage 'train'" in out and "Running stage 'download'" not in out
    # `dvc exp show --json`: one entry per commit, each with the experiments run from it.
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json", env=env))
    runs = [rev for commit in shown for exp in (commit.get("experiments") or []) for rev in exp["revs"]]
    assert "adam-e2e" in [r["name"] for r in runs]
    adam = next(r for r in runs if r["name"] == "adam-e2e")["data"]
    assert adam["params"]["params.yaml"]["data"]["train"]["optimizer"] == "adam"
    assert "accuracy" in adam["metrics"]["reports/metrics.json"]["data"]["test"]

    # The README's comparison table: what changed, without the outputs' hashes. Here it holds three runs and two
    # changed params (train.*, and plots.dpi of an earlier test): 154 columns; main against adam alone, 136.
    table = sh(repo, "dvc", "exp", "show", "--only-changed", "--drop", "Created|models/|reports/|data/", env=env)
    assert max(len(line) for line in table.splitlines()) <= 160, table
    assert "adam-e2e" in table and "train.optimizer" in table and "test.accuracy" in table

    # As the README compares: the baseline by its branch's name against the experiment. (`dvc exp run` applied
    # adam's results to the workspace, so "workspace" would be adam again.)
    diff = sh(repo, "dvc", "metrics", "diff", "main", "adam-e2e", "--all", env=env)
    assert all(name in diff for name in ("test.accuracy", "test.one_pass", "robustness.mean", "robustness.worst"))

    out = sh(repo, "dvc", "plots", "diff", "main", "adam-e2e", "-o", "plots_html", env=env)
    html = (repo / "plots_html" / "index.html").read_text()
    assert "Accuracy per epoch" in html and "Test errors per digit" in html and "adam-e2e" in html
    assert "Errors under each corruption" in html
    assert "training_curves.png" in html
    assert len(list((repo / "plots_html" / "static").glob("*training_curves.png"))) == 2
    # Two different runs on the page: each revision's training curve is its own.
    drawn = json.loads(sh(repo, "dvc", "plots", "diff", "main", "adam-e2e", "--json", env=env))
    loss = drawn["data"]["loss"][0]["content"]["data"]["values"]
    curves = {rev: [row["loss"] for row in loss if row["rev"] == rev] for rev in ("main", "adam-e2e")}
    assert curves["main"] and curves["adam-e2e"] and curves["main"] != curves["adam-e2e"], curves
    if CHROMIUM is not None:  # the same page in a browser, offline: test_plots_pages_draw_offline_in_chromium
        assert_drawn_offline(open_page(repo / "plots_html" / "index.html"), revisions={"main", "adam-e2e"})


# The vega plots of dvc.yaml (the rest are PNGs), and those of them whose colour legend lists the revisions.
VEGA_PLOTS = sorted(next(iter(p)) for p in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
                    if isinstance(p, dict))
PER_REVISION = ("accuracy", "loss", "per_class", "robustness")


def assert_drawn_offline(page: dict, revisions: set[str]) -> None:
    """Every vega plot drew marks, with no request to the network and no console error; one legend entry a revision."""
    assert page["refused"] == [] and page["errors"] == [], page
    assert sorted(page["divs"]) == VEGA_PLOTS and sorted(e["id"] for e in page["embeds"]) == VEGA_PLOTS, page
    for embed in page["embeds"]:
        assert "error" not in embed and embed["marks"] > 0, embed
        if embed["id"] in PER_REVISION:
            assert set(embed["legend"]) == revisions, embed


@pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` on PATH (Debian: apt-get install chromium; .ci/run "
                    "installs it): the plots pages are not opened in a browser")
def test_plots_pages_draw_offline_in_chromium(dvc_repo) -> None:
    repo, env = dvc_repo
    sh(repo, "dvc", "plots", "show", "-o", "show_html", env=env)
    assert_drawn_offline(open_page(repo / "show_html" / "index.html"), revisions={"workspace"})


def test_remote_round_trip_and_artifact_by_name(dvc_repo, tmp_path) -> None:
    repo, env = dvc_repo
    sh(repo, "dvc", "remote", "add", "-d", "shared", str(tmp_path / "dvc-remote"), env=env)
    sh(repo, "git", "commit", "-q", "-am", "default remote", env=env)
    sh(repo, "dvc", "push", env=env)

    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone), env=env)
    sh(clone, "dvc", "pull", env=env)
    assert (clone / "models/model.pt").read_bytes() == (repo / "models/model.pt").read_bytes()
    out = sh(clone, "dvc", "repro", env=env)
    assert "Data and pipelines are up to date." in out and "Running stage" not in out

    # Register a version the way GTO / the model registry does: an annotated git tag name@version.
    sh(repo, "git", "tag", "-a", "mnist-cnn@v1.0.0", "-m", "Registering artifact mnist-cnn version v1.0.0", env=env)
    sh(tmp_path, "dvc", "artifacts", "get", str(repo), "mnist-cnn", "-o", str(tmp_path / "fetched.pt"), env=env)
    assert (tmp_path / "fetched.pt").read_bytes() == (repo / "models/model.pt").read_bytes()
