"""Where each stage reads and writes; dvc.yaml declares the same paths."""

from pathlib import Path

PARAMS = Path("params.yaml")
PARAMS_CHECKED = Path("reports/params.ok")  # params -> the same bytes whenever params.yaml is valid
RAW_DIR = Path("data/raw")  # download -> the four IDX files
# Each split's (images, labels) files in RAW_DIR, uncompressed, under MNIST's own names.
SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_FILES = SPLITS["train"] + SPLITS["test"]
SUITE = Path("data/suite/test.pt")  # corrupt -> the robustness suite's images, labels and test-set indices
MODEL = Path("models/model.pt")  # train -> best weights and their metadata
ONNX = Path("models/model.onnx")  # export -> the same weights as ONNX
TRAIN_REPORT = Path("reports/train")  # train -> DVCLive history, summary metrics, model table
TRAIN_HISTORY = TRAIN_REPORT / "plots" / "metrics"  # DVCLive's per-epoch TSV files
TRAIN_METRICS = TRAIN_REPORT / "metrics.json"  # the latest epoch while training runs, then the summary
TRAIN_RUN = TRAIN_REPORT / "run.json"  # train -> how the run went and what it ran on, beyond the summary
METRICS = Path("reports/metrics.json")  # evaluate -> the headline test and robustness figures
EVAL_DETAILS = Path("reports/eval/details.json")  # evaluate -> errors, loss, the held-out group, the worst's name
CONFUSION = Path("reports/eval/confusion.json")  # evaluate -> one row per test image
PER_CLASS = Path("reports/eval/per_class.json")  # evaluate -> test accuracy of each digit
PER_CORRUPTION = Path("reports/eval/robustness.json")  # evaluate -> accuracy under each corruption of the suite
MODEL_CARD = Path("reports/model_card.md")  # evaluate -> what the model is, how it scored, its limits
PLOTS = Path("reports/plots")  # plots -> PNGs
