"""Bad params, bad data, bad model files: exit 2, one line naming the file or key, no output touched."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

from stages import cli, download, evaluate, plots, train
from tests.helpers import REPO, file_hashes, set_param


def fails(root: Path, stage: ModuleType, capsys, expected: str) -> str:
    """Run a stage as `python -m` would; assert exit 2, a message with `expected`, nothing written."""
    before = file_hashes(root)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(stage.main, stage.parser(), [])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert expected in err, err
    assert "Traceback" not in err
    assert file_hashes(root) == before
    return err.strip()


@pytest.mark.parametrize("dotted, value, expected", [
    ("train.optimiser", "adam", "unknown key 'train.optimiser'; did you mean 'train.optimizer'?"),
    ("train.epochs", "ten", "train.epochs: must be an integer, got 'ten'"),
    ("train.lr", float("nan"), "train.lr: must be a finite number"),
    ("train.optimizer", "adamw2", "train.optimizer: 'adamw2' is not one of 'sgd', 'adam'"),
    ("train.device", "tpu", "train.device: 'tpu' is not one of 'auto', 'cpu', 'cuda', 'mps'"),
    ("data.holdout_size", 300, "data.holdout_size: must be in [1, 299] for 300 training images"),
    ("train.batch_size", 251, "train.batch_size: must be at most the 250 training images"),
])
def test_bad_params_stop_train_with_one_line(project: Path, capsys, dotted, value, expected) -> None:
    set_param(project, dotted, value)
    fails(project, train, capsys, expected)


def test_missing_accelerator_is_named(project: Path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    set_param(project, "train.device", "cuda")
    fails(project, train, capsys, "train.device: 'cuda' is not available on this machine")


def _rewrite(path: Path, change: Callable[[bytes], bytes]) -> None:
    path.write_bytes(change(path.read_bytes()))


@pytest.mark.parametrize("name, change, expected", [
    ("train-images-idx3-ubyte", None, "train-images-idx3-ubyte: missing"),
    ("train-images-idx3-ubyte", lambda b: b[:1000], "train-images-idx3-ubyte: truncated"),
    ("train-labels-idx1-ubyte", lambda b: b"\x00\x00\x08\x07" + b[4:], "wrong magic number 0x00000807"),
    ("train-images-idx3-ubyte", lambda b: b[:4] + (299).to_bytes(4, "big") + b[8:], "too long"),
    ("train-labels-idx1-ubyte", lambda b: b[:8] + bytes([10]) + b[9:], "labels outside 0-9"),
    ("train-labels-idx1-ubyte", lambda b: b[:4] + (299).to_bytes(4, "big") + b[8:-1],
     "300 images in train-images-idx3-ubyte but 299 labels"),
])
def test_bad_data_files_stop_train_naming_the_file(project: Path, capsys, name, change, expected) -> None:
    path = project / "data" / "raw" / name
    if change is None:
        path.unlink()
    else:
        _rewrite(path, change)
    fails(project, train, capsys, expected)


def test_checksum_mismatch_fails_download_and_keeps_data(project: Path, capsys) -> None:
    set_param(project, "data.md5.t10k-labels-idx1-ubyte", "0" * 32)
    message = fails(project, download, capsys, "t10k-labels-idx1-ubyte: MD5")
    assert "is not the expected 00000000000000000000000000000000" in message


def test_every_source_failing_lists_each_attempt(project: Path, capsys) -> None:
    set_param(project, "data.sources", [str(project / "nowhere"), "https://127.0.0.1:9/mnist/"])
    err = fails(project, download, capsys, "no source yielded")
    assert "nowhere: not a directory" in err and "127.0.0.1:9" in err


def test_tarball_with_member_outside_target_is_refused(project: Path, capsys) -> None:
    import io
    import tarfile

    with tarfile.open(project / "evil.tgz", "w:gz") as archive:
        info = tarfile.TarInfo("../../escaped")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    set_param(project, "data.sources", [str(project / "evil.tgz")])
    fails(project, download, capsys, "unsafe member '../../escaped' would land outside the target directory")
    assert not (project.parent / "escaped").exists()


@pytest.mark.parametrize("content, expected", [
    (None, "models/model.pt: missing (run `dvc repro train` first)"),
    (b"PK\x03\x04 truncated", "models/model.pt: not a readable checkpoint"),
    (b"just some text", "models/model.pt: not a readable checkpoint"),
    ("tensor", "models/model.pt: not a checkpoint of this project"),
    ("other-net", "models/model.pt: holds weights of a different architecture"),
])
def test_bad_model_file_stops_evaluate(project: Path, capsys, content, expected) -> None:
    model = project / "models" / "model.pt"
    model.parent.mkdir(exist_ok=True)
    if content == "tensor":
        torch.save(torch.zeros(3), model)
    elif content == "other-net":
        torch.save({"state_dict": torch.nn.Linear(784, 10).state_dict()}, model)
    elif content is not None:
        model.write_bytes(content)
    fails(project, evaluate, capsys, expected)


def test_truncated_real_checkpoint_stops_evaluate_with_the_next_step(project: Path, capsys) -> None:
    from stages.model import Net

    model = project / "models" / "model.pt"
    model.parent.mkdir()
    torch.save({"state_dict": Net().state_dict()}, model)
    _rewrite(model, lambda b: b[: len(b) // 2])
    err = fails(project, evaluate, capsys, "models/model.pt: not a readable checkpoint")
    assert err.endswith("; restore it with `dvc checkout models/model.pt`, or train it again with `dvc repro train`")
    assert err.count("\n") == 0 and "internal miniz error" not in err  # PyTorch's first sentence only


class _RunsCode:
    """Pickles as a call of os.system: what a hostile checkpoint holds."""

    def __reduce__(self):
        return os.system, ("touch pwned",)


def test_checkpoint_that_would_run_code_is_refused_without_the_advice_to_load_it_unsafely(project: Path,
                                                                                          capsys) -> None:
    model = project / "models" / "model.pt"
    model.parent.mkdir()
    torch.save({"state_dict": _RunsCode()}, model)
    err = fails(project, evaluate, capsys, "models/model.pt: not a checkpoint written by `stages.train`: it holds "
                "objects other than tensors and plain values, so it was refused without running anything")
    assert "weights_only" not in err and "False" not in err
    assert not (project / "pwned").exists()


def test_invalid_yaml_names_line_and_column(project: Path, capsys) -> None:
    text = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(text.replace("epochs: 1\n", "epochs: [1, 2\n", 1))
    line = text[:text.index("epochs: 1")].count("\n") + 2  # the parser notices on the next line
    err = fails(project, train, capsys, f"params.yaml: not valid YAML at line {line}, column ")
    assert "while parsing a flow sequence; expected ',' or ']'" in err


def test_plots_without_evaluate_output_names_the_missing_file(project: Path, capsys) -> None:
    history = project / "reports" / "train" / "plots" / "metrics"
    for split in ("train", "val"):
        for metric in ("accuracy", "loss"):
            (history / split).mkdir(parents=True, exist_ok=True)
            (history / split / f"{metric}.tsv").write_text(f"timestamp\tstep\t{metric}\n0\t1\t0.5\n")
    fails(project, plots, capsys, "reports/eval/confusion.json: missing (run `dvc repro evaluate` first)")


def test_debug_shows_the_traceback(project: Path, capsys, monkeypatch) -> None:
    set_param(project, "train.epochs", 0)
    monkeypatch.setenv("MNIST_DEBUG", "1")
    with pytest.raises(SystemExit):
        cli.run(train.main, train.parser(), [])
    assert "Traceback" in capsys.readouterr().err


def _stage(project: Path, module: str) -> subprocess.Popen:
    # PYTHONFAULTHANDLER: a SIGABRT prints every thread's Python stack, so a stage that hangs says where.
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONFAULTHANDLER": "1"}
    return subprocess.Popen([sys.executable, "-m", module], cwd=project, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _ended(proc: subprocess.Popen, seconds: float) -> str:
    """The stage's stderr once it has exited; if it has not within `seconds`, fail with where it is stuck."""
    try:
        return proc.communicate(timeout=seconds)[1]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        pytest.fail(f"the stage did not exit within {seconds:.0f} s; its stacks:\n{proc.communicate()[1][-6000:]}")


def test_sigterm_and_kill_during_training_leave_no_model_and_a_rerun_matches(project: Path) -> None:
    set_param(project, "train.epochs", 200)
    set_param(project, "train.precision", "fp32")
    model = project / "models" / "model.pt"

    for sig, code in ((signal.SIGTERM, 130), (signal.SIGKILL, -signal.SIGKILL)):
        proc = _stage(project, "stages.train")
        for line in proc.stdout:  # wait until training is under way
            if line.startswith("epoch  1/"):
                break
        time.sleep(0.2)
        proc.send_signal(sig)
        # An interrupted step ends in milliseconds; the allowance is for a machine busy with other work.
        err = _ended(proc, 180)
        assert proc.returncode == code, err
        # The history of the epochs that ended may stay (DVC records no failed stage); a model never does.
        assert not model.exists() and not (project / "reports" / "train" / "model_summary.txt").exists()
        if sig == signal.SIGTERM:  # unwinds like Ctrl-C: a message, no traceback, no scratch files
            assert "interrupted: no output was completed" in err and "Traceback" not in err
            assert not list(project.rglob("*.tmp"))

    # A clean rerun after the kill gives exactly the model of another clean run:
    # the same bytes, so dvc.lock records the same hash (and evaluate the same metrics).
    set_param(project, "train.epochs", 2)
    runs = []
    for _ in range(2):
        proc = _stage(project, "stages.train")
        err = _ended(proc, 300)
        assert proc.returncode == 0, err
        runs.append(model.read_bytes())
        shutil.rmtree(project / "models")
    assert runs[0] == runs[1]
