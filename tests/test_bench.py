"""bench/: the speed comparison, the hold-out recipe comparison and the paired report of two recipes."""

from __future__ import annotations

import functools
import json
import sys
import tempfile
from pathlib import Path

import pytest

from bench import bench, holdout, paired
from stages.errors import StageError


def test_bench_reports_the_median_of_side_by_side_ratios(project: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["bench.bench", "--reps", "3", "--images", "200",
                                      "--reference-batch-size", "50", "--json", "bench.json"])
    scratch = project / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    bench.main()
    assert list(scratch.glob("bench-mnist-*")) == []  # the reference's torchvision layout is removed again
    result = json.loads((project / "bench.json").read_text())
    assert len(result["throughput"]["reps"]) == 3
    assert all(rep["ours"] > 0 and rep["reference"] > 0 for rep in result["throughput"]["reps"])
    assert (result["our_batch_size"], result["reference_batch_size"]) == (50, 50)
    # What is printed is what is saved.
    table = capsys.readouterr().out
    assert "| reference (batch 50), median |" in table
    assert f"| speed-up, median of 3 side-by-side ratios | {result['throughput']['median_ratio']:.2f}x |" in table


def test_holdout_bench_scores_every_variant_on_the_smallest_holdout(project: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["bench.holdout", "--seeds", "1", "2", "--variant", "h50:",
                                      "--variant", "h20:data.holdout_size=20", "--json", "holdout.json"])
    holdout.main()
    result = json.loads((project / "holdout.json").read_text())
    assert [(r["variant"], r["seed"], r["holdout_size"]) for r in result["runs"]] == [
        ("h50", 1, 50), ("h20", 1, 20), ("h50", 2, 50), ("h20", 2, 20)]
    # Accuracy on 20 images comes in steps of 5 %.
    assert all(round(r["val_accuracy"] * 20, 6).is_integer() for r in result["runs"])
    assert set(result["summary"]) == {"h50", "h20"} and result["summary"]["h20"]["runs"] == 2
    assert "scored on 20 held-out images" in capsys.readouterr().out


def test_holdout_bench_never_reads_the_test_set(project: Path, monkeypatch) -> None:
    # Recipes are compared on the hold-out alone: without the test files it runs all the same.
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (project / "data" / "raw" / name).unlink()
    monkeypatch.setattr(sys, "argv", ["bench.holdout", "--seeds", "1", "--variant", "default:", "--json", "h.json"])
    holdout.main()
    assert [r["variant"] for r in json.loads((project / "h.json").read_text())["runs"]] == ["default"]


def test_holdout_summary_pairs_each_variant_with_the_baseline_by_seed(tmp_path: Path, monkeypatch, capsys) -> None:
    def run(variant: str, seed: int, tta: float, epochs: int, one_pass: float = 0.99) -> dict:
        return {"variant": variant, "seed": seed, "val_accuracy": one_pass, "tta_accuracy": tta,
                "epochs_run": epochs}

    # Two processes' files, as a study splits its seeds; the budget ran out before seed 3's short run.
    a_runs = [run("default", 1, 0.9940, 18), run("e13", 1, 0.9944, 13, one_pass=0.9896), run("default", 3, 0.9900, 18)]
    b_runs = [run("default", 2, 0.9952, 16), run("e13", 2, 0.9944, 12, one_pass=0.9900)]
    (tmp_path / "a.json").write_text(json.dumps({"runs": a_runs}))
    (tmp_path / "b.json").write_text(json.dumps({"runs": b_runs}))
    files = [str(tmp_path / name) for name in ("a.json", "b.json")]
    monkeypatch.setattr(sys, "argv", ["bench.holdout", "--summarize", *files])
    holdout.main()
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("| variant | seeds | tta_accuracy (%): mean, worst | tta_accuracy paired vs default "
                              "(points, mean ± SE) | val_accuracy paired vs default ")
    # Paired differences +0.04 and -0.08 points: mean -0.02, SE 0.06; epochs 25 against 34. The single pass
    # (val_accuracy), which the shifts can hide: -0.04 and 0.00 points, mean -0.02, SE 0.02.
    assert rows[2] == "| default | 1 2 | 99.460, 99.40 | +0.000 ± 0.000 | +0.000 ± 0.000 | 17.0 (16-18), 1.00x |"
    assert rows[3] == "| e13 | 1 2 | 99.440, 99.44 | -0.020 ± 0.060 | -0.020 ± 0.020 | 12.5 (12-13), 0.74x |"
    # --variant names pick variants from files that hold others too, the first named as the baseline.
    (tmp_path / "c.json").write_text(json.dumps({"runs": [run("e25", 2, 0.9960, 15), run("e25", 1, 0.9940, 17)]}))
    monkeypatch.setattr(sys, "argv", ["bench.holdout", "--summarize", *files, str(tmp_path / "c.json"),
                                      "--variant", "default", "--variant", "e25"])
    holdout.main()
    rows = capsys.readouterr().out.splitlines()
    assert [r.split(" | ")[0] for r in rows[2:]] == ["| default", "| e25"]
    assert rows[3] == "| e25 | 1 2 | 99.500, 99.40 | +0.040 ± 0.040 | +0.000 ± 0.000 | 16.0 (15-17), 0.94x |"
    monkeypatch.setattr(sys, "argv", ["bench.holdout", "--summarize", *files])
    (tmp_path / "b.json").write_text(json.dumps({"runs": [run("e13", 1, 0.9944, 13)]}))  # the same run again
    with pytest.raises(SystemExit, match="ran seed 1 twice"):
        holdout.main()


def test_bench_train_reports_the_test_accuracy_of_the_kept_weights(project: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["bench.bench", "--reps", "1", "--images", "100", "--train",
                                      "--json", "bench.json"])
    bench.main()
    run = json.loads((project / "bench.json").read_text())["train"]
    assert (run["epochs_run"], run["saved_epoch"]) == (1, 1)
    # 100 generated test images: accuracy comes in steps of 1 %.
    assert round(run["test_accuracy"] * 100, 6).is_integer()
    assert run["reached_99_41"] == (run["test_accuracy"] >= 0.9941)


def test_process_bench_splits_the_stage_and_times_the_reference(project: Path, monkeypatch, capsys) -> None:
    from bench import process

    monkeypatch.setattr(sys, "argv", ["bench.process", "--reps", "1", "--epochs", "2", "--precision", "fp32",
                                      "--reference-batch-size", "50", "--json", "process.json"])
    process.main()
    result = json.loads((project / "process.json").read_text())
    stage, reference = result["reps"][0]["stage"], result["reps"][0]["reference"]
    assert stage["startup_s"] > 0 and stage["loop_s"] > 0 and stage["end_s"] > 0 and reference["wall_s"] > 0
    # Two clocks agree: the probe's first-to-last step lies inside the stage's own train_seconds
    # (which also holds the validations), and that inside the process's wall time.
    assert stage["loop_s"] < stage["train_seconds"] < stage["wall_s"]
    assert stage["precision"] == "fp32"
    assert f"| speed-up, median of side-by-side ratios | {result['median']['ratio']:.2f}x |" in capsys.readouterr().out


def test_step_profile_counts_the_convolutions_flops_from_the_architecture_table(monkeypatch, capsys) -> None:
    import torch

    from bench import profile_step
    from stages.model import Net

    # Multiply-adds per image, forward, from README's table: output pixels x out channels x in channels x 9.
    macs = 784 * 8 * 9 + 784 * 16 * 72 + 2 * 196 * 16 * 144 + 25 * 16 * 144 + 9 * 10 * 144
    conv1 = 784 * 8 * 9
    flops = profile_step.conv_flops(Net(), torch.randn(2, 1, 28, 28))
    assert sum(f["forward"] for f in flops.values()) == 2 * 2 * macs
    # Backward: weight gradients of all six, input gradients of all but Conv1 (its input is the image).
    assert sum(f["backward"] for f in flops.values()) == 2 * 2 * (2 * macs - conv1)

    monkeypatch.setattr(sys, "argv", ["bench.profile_step", "--steps", "2", "--rounds", "1"])
    monkeypatch.setattr(profile_step, "gemm_gflops", functools.partial(profile_step.gemm_gflops, size=512))
    profile_step.main()
    out = capsys.readouterr().out
    for row in ("| conv1 |", "| conv6 |", "| pooling |", "| optimizer |", "| convolution |", "| batchnorm |"):
        assert row in out
    assert "of this host's GEMM rate" in out


def test_robustness_bench_scores_the_holdout_suite_with_and_without_predicts_preparation(project: Path, monkeypatch,
                                                                                         capsys) -> None:
    import torch

    from bench import robustness
    from stages.model import Net

    torch.manual_seed(0)
    torch.save({"state_dict": Net().state_dict()}, project / "model.pt")
    monkeypatch.setattr(sys, "argv", ["bench.robustness", "model.pt", "--size", "20", "--json", "suite.json"])
    robustness.main()
    runs = json.loads((project / "suite.json").read_text())["runs"]
    assert [r["prepare"] for r in runs] == ["none", "predict"]
    assert all(len(r["accuracy"]) == 22 and "clean" in r["accuracy"] for r in runs)
    assert runs[0]["accuracy"] != runs[1]["accuracy"]  # the preparation changes what the model reads
    out = capsys.readouterr().out
    assert out.startswith("20 hold-out images, 1 models") and "| brightness |" in out
    # Hold-out images only: each one is among the hold-out's 50, none among the images training fits.
    pixels, _ = robustness.holdout_pixels(project / "data" / "raw", 50, 0, 20)
    images, _ = robustness.idx.load_split(project / "data" / "raw", "train")
    fit, holdout = robustness.data.holdout_split(len(images), 50, 0)
    chosen = {bytes((p[0] * 255).round().to(torch.uint8).flatten().tolist()) for p in pixels}
    assert len(chosen) == 20
    assert chosen <= {bytes(i.flatten().tolist()) for i in images[holdout]}
    assert not chosen & {bytes(i.flatten().tolist()) for i in images[fit]}


def _run(name: str, seed: int, appearance: float, accuracy: float, mean: float, worst: float) -> dict:
    # exp_show's shape: flat keys, every number a float, a file prefix on clashes.
    return {"Experiment": name, "rev": "abc1234", "State": "Success", "train.seed": float(seed),
            "train.augment.appearance": appearance, "reports/metrics.json:test.accuracy": accuracy,
            "test.one_pass": accuracy - 0.0005, "robustness.mean": mean, "robustness.worst": worst}


def test_paired_compares_two_recipes_seed_by_seed() -> None:
    rows = [_run("o1", 1, 0.0, 0.9950, 0.70, 0.10), _run("o2", 2, 0.0, 0.9940, 0.60, 0.20),
            _run("n1", 1, 0.6, 0.9960, 0.85, 0.40), _run("n2", 2, 0.6, 0.9950, 0.95, 0.60),
            _run("n3", 3, 0.6, 0.9990, 0.99, 0.99), {**_run("q", 4, 0.0, 0.0, 0.0, 0.0), "State": "Queued"}]
    old, new = paired.pick(rows, "train.augment.appearance=0"), paired.pick(rows, "train.augment.appearance=0.6")
    assert sorted(old) == [1, 2] and sorted(new) == [1, 2, 3]  # the queued run is not a result
    table = paired.compare(old, new)
    assert "| 1 | 99.50 → 99.60 | 99.45 → 99.55 | 70.0 → 85.0 | 10.0 → 40.0 |" in table
    assert "| old | 99.40 | 99.450 | 99.35 | 99.400 | 65.00 | 15.00 |" in table
    # Mean error 35 % -> 10 %; the worst's error 85 % -> 50 %; seed 3 has no partner, so it counts nowhere.
    assert "2 seeds paired. New against old: the suite's mean error 0.29x, the worst corruption's error 0.59x" in table
    assert "test accuracy +0.100 points." in table and "seeds 3." in table


def test_paired_refuses_a_bad_selector_an_empty_recipe_and_a_seed_twice() -> None:
    rows = [_run("o1", 1, 0.0, 0.995, 0.7, 0.1), _run("o1b", 1, 0.0, 0.996, 0.7, 0.1)]
    with pytest.raises(StageError, match="picked as key=value"):
        paired.pick(rows, "train.augment.appearance")
    with pytest.raises(StageError, match="no finished experiment has it"):
        paired.pick(rows, "train.augment.appearance=0.3")
    with pytest.raises(StageError, match="seed 1 twice"):
        paired.pick(rows, "train.augment.appearance=0")


def test_robustness_summary_pairs_each_variant_with_the_baseline_by_seed(tmp_path: Path, monkeypatch,
                                                                          capsys) -> None:
    from bench import robustness
    from stages.corruptions import CORRUPTIONS

    def run(model: str, stripe: float, clean: float = 0.99) -> dict:
        return {"model": f"/tmp/m/{model}.pt", "prepare": "none",
                "accuracy": {"clean": clean} | {name: 0.9 for name in CORRUPTIONS} | {"stripe": stripe}}

    # seed 3 has no e10 run: a seed some variant lacks is left out of every pair
    runs = [run("default-1", 0.30), run("default-2", 0.40), run("default-3", 0.1),
            run("e10-1", 0.50, clean=0.98), run("e10-2", 0.35)]
    (tmp_path / "suite.json").write_text(json.dumps({"holdout_images": 20, "runs": runs}))
    monkeypatch.setattr(sys, "argv", ["bench.robustness", "--summarize", str(tmp_path / "suite.json"),
                                      "--variant", "default", "--variant", "e10"])
    robustness.main()
    out = capsys.readouterr().out
    assert "seeds 1 2;" in out
    assert "| stripe | 35.00 | 42.50 (+7.50 ± 12.50, 1 of 2) |" in out
    assert "| worst | 35.00 | 42.50 (+7.50 ± 12.50, 1 of 2) |" in out
    assert "| clean | 99.00 | 98.50 (-0.50 ± 0.50, 0 of 2) |" in out
    assert "| each run's worst | stripe 2 | stripe 2 |" in out
    # A model not named <variant>-<seed>.pt cannot be paired: said, not guessed.
    (tmp_path / "bad.json").write_text(json.dumps({"runs": [run("model", 0.3)]}))
    monkeypatch.setattr(sys, "argv", ["bench.robustness", "--summarize", str(tmp_path / "bad.json")])
    with pytest.raises(SystemExit, match="not named <variant>-<seed>.pt"):
        robustness.main()


def test_lockstep_compares_each_pairs_seconds_per_epoch_and_the_held_out_group(monkeypatch, capsys,
                                                                               tmp_path: Path) -> None:
    from bench import lockstep
    from stages.corruptions import CORRUPTIONS

    def run(variant: str, seed: int, train_s: float, epochs: int) -> dict:
        return {"variant": variant, "seed": seed, "tta_accuracy": 0.995, "epochs_run": epochs, "train_s": train_s}

    def scored(model: str, stripe: float, fog: float) -> dict:
        return {"model": f"/tmp/m/{model}.pt", "prepare": "none",
                "accuracy": {"clean": 0.99} | {name: 0.9 for name in CORRUPTIONS} | {"stripe": stripe, "fog": fog}}

    # Seed 2's candidate never finished: it pairs with nothing and is left out.
    runs = [run("default", 1, 200.0, 10), run("n05", 1, 198.0, 9), run("default", 2, 300.0, 10),
            run("default", 3, 400.0, 16), run("n05", 3, 450.0, 18)]
    suite = [scored("default-1", 0.3, 0.9), scored("n05-1", 0.5, 0.91), scored("default-2", 0.3, 0.9),
             scored("default-3", 0.3, 0.9), scored("n05-3", 0.6, 0.88)]
    (tmp_path / "runs.json").write_text(json.dumps({"runs": runs}))
    (tmp_path / "suite.json").write_text(json.dumps({"runs": suite}))
    monkeypatch.setattr(sys, "argv", ["bench.lockstep", str(tmp_path / "runs.json"), "--suite",
                                      str(tmp_path / "suite.json"), "--variant", "default", "--variant", "n05"])
    lockstep.main()
    out = capsys.readouterr().out.splitlines()
    # 20 -> 22 s per epoch on seed 1, 25 -> 25 on seed 3: medians 22.5 and 23.5.
    assert out[1] == "1: 99.50, 10, 200 (20.0) | 99.50, 9, 198 (22.0) | 1.100"
    assert out[2] == "3: 99.50, 16, 400 (25.0) | 99.50, 18, 450 (25.0) | 1.000"
    assert out[3] == "seconds per epoch, median: default 22.50, n05 23.50, ratio 1.044"
    assert out[4] == "train seconds summed: default 600, n05 648, ratio 1.080"
    # Of the ten held-out corruptions only stripe and fog move; the nine other than stripe see fog alone.
    assert out[6] == "1: 84.00 -> 86.10; 9 others +0.11"
    assert out[7] == "3: 84.00 -> 86.80; 9 others -0.22"
    assert out[8] == "held-out group: +2.45 ± 0.35 points, 2 of 2 seeds up"
    assert out[9] == "9 other than stripe: -0.06 ± 0.17 points, 1 of 2 seeds up"
    monkeypatch.setattr(sys, "argv", ["bench.lockstep", str(tmp_path / "runs.json"), "--suite",
                                      str(tmp_path / "suite.json"), "--variant", "default", "--variant", "n10"])
    with pytest.raises(SystemExit, match="no seed has runs and suite scores of both 'default' and 'n10'"):
        lockstep.main()
