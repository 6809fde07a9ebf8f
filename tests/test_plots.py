from pathlib import Path

import pytest
import torch

from stages import plots
from stages.errors import StageError


def write_history(directory: Path, epochs: int = 3) -> None:
    for split in ("train", "val"):
        for metric in ("accuracy", "loss"):
            (directory / split).mkdir(parents=True, exist_ok=True)
            rows = "".join(f"{1700000000 + e}\t{e}\t{0.9 + e / 100 if metric == 'accuracy' else 1 / e}\n"
                           for e in range(1, epochs + 1))
            (directory / split / f"{metric}.tsv").write_text(f"timestamp\tstep\t{metric}\n{rows}")


def test_history_is_read_per_split_and_metric(tmp_path: Path) -> None:
    write_history(tmp_path)
    history = plots.read_history(tmp_path)
    assert set(history) == {"train/accuracy", "train/loss", "val/accuracy", "val/loss"}
    assert history["val/accuracy"] == [(1, 0.91), (2, 0.92), (3, 0.93)]


def test_loss_legend_says_the_training_loss_is_label_smoothed_and_hides_no_tick_label(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    # The training curve sits near 0.55 and validation near 0.12: the legend must say why.
    write_history(tmp_path)
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi: figures.append(fig))
    plots.plot_curves(plots.read_history(tmp_path), tmp_path / "curves.png", dpi=40)
    loss_axes = figures[0].axes[1]
    labels = [t.get_text() for t in loss_axes.get_legend().get_texts()]
    assert labels == ["training (label-smoothed cross-entropy)", "validation (plain cross-entropy)"]
    figures[0].canvas.draw()
    legend = loss_axes.get_legend().get_window_extent()
    assert legend.x0 >= loss_axes.get_window_extent().x0  # inside the axes, clear of the y tick labels


def test_confusion_counts_are_actual_by_predicted() -> None:
    rows = [{"index": 0, "actual": 3, "predicted": 5, "probability": 0.6},
            {"index": 1, "actual": 3, "predicted": 3, "probability": 0.9},
            {"index": 2, "actual": 3, "predicted": 5, "probability": 0.7}]
    counts = plots.confusion_counts(rows)
    assert counts[3, 5] == 2 and counts[3, 3] == 1 and counts.sum() == 3


def test_pngs_are_written_whole(tmp_path: Path) -> None:
    write_history(tmp_path / "history")
    rows = [{"index": i, "actual": i % 10, "predicted": (i + (i % 3 == 0)) % 10, "probability": 0.5}
            for i in range(30)]
    plots.plot_curves(plots.read_history(tmp_path / "history"), tmp_path / "curves.png", dpi=40)
    plots.plot_confusion(rows, tmp_path / "confusion.png", dpi=40)
    plots.plot_misclassified(rows, torch.zeros(30, 28, 28, dtype=torch.uint8), tmp_path / "wrong.png", dpi=40,
                             limit=5)
    suite = {"indices": torch.arange(12), "labels": torch.zeros(12, dtype=torch.long),
             "fog": torch.full((12, 28, 28), 200, dtype=torch.uint8),
             "thin": torch.zeros(12, 28, 28, dtype=torch.uint8)}
    plots.plot_suite(suite, torch.zeros(30, 28, 28, dtype=torch.uint8), tmp_path / "suite.png", dpi=40)
    for name in ("curves.png", "confusion.png", "wrong.png", "suite.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_damaged_confusion_rows_are_named(tmp_path: Path) -> None:
    path = tmp_path / "confusion.json"
    path.write_text('[{"actual": 1}]')
    with pytest.raises(StageError, match="confusion.json: not evaluate's confusion rows"):
        plots.read_confusion(path)
