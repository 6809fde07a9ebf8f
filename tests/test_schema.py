"""params.schema.json: current with stages/config.py, and what an editor's YAML language server checks against."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
import yaml

from stages import config, params
from stages.errors import ParamsError
from tests.helpers import REPO


def test_committed_schema_is_what_stages_params_prints(capsys) -> None:
    params.main(params.parser().parse_args(["--schema"]))
    printed = capsys.readouterr().out
    committed = (REPO / "params.schema.json").read_text()
    assert printed == committed, "stale: run `python -m stages.params --schema > params.schema.json`"


def test_params_yaml_points_editors_at_the_schema() -> None:
    assert (REPO / "params.yaml").read_text().splitlines()[0] == "# yaml-language-server: $schema=params.schema.json"


def validator() -> jsonschema.protocols.Validator:
    schema = json.loads((REPO / "params.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_shipped_params_yaml_is_valid_against_the_schema() -> None:
    assert list(validator().iter_errors(yaml.safe_load((REPO / "params.yaml").read_text()))) == []


@pytest.mark.parametrize("edit, flagged", [
    (lambda raw: raw["train"].update(optimiser="adam"), "'optimiser' was unexpected"),
    (lambda raw: raw["train"].update(lr=-1), "-1 is less than or equal to the minimum of 0"),
    (lambda raw: raw["train"].update(epochs="ten"), "'ten' is not of type 'integer'"),
    (lambda raw: raw["train"].update(optimizer="adamw"), "'adamw' is not one of ['sgd', 'adam']"),
    (lambda raw: raw["data"]["md5"].pop("t10k-labels-idx1-ubyte"), "'t10k-labels-idx1-ubyte' is a required property"),
])
def test_editor_flags_what_the_stages_refuse(edit, flagged: str) -> None:
    raw = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text()))
    edit(raw)
    messages = [e.message for e in validator().iter_errors(raw)]
    assert any(flagged in m for m in messages), messages
    with pytest.raises(ParamsError):  # and the pipeline's own check agrees
        config.parse(raw)


def test_each_key_has_a_description_for_the_editors_hover() -> None:
    schema = config.schema()
    for name, section in schema["$defs"].items():
        assert section.get("description"), f"section {name} has no description"
        for key, node in section["properties"].items():
            assert node.get("description"), f"{name}.{key} has no description"
