"""Stage `params`: check all of params.yaml before any other stage runs.

DVC removes a stage's outputs just before running it, so a bad value that
only `train` noticed would already have cost models/model.pt. Every other
stage runs after this one, so a bad value stops here and every model and
report stays as it was. The one output is the same bytes for any valid
params.yaml: the later stages rerun only for the params they list.

    python -m stages.params            # the stage
    python -m stages.params --schema   # print the JSON Schema (params.schema.json)
"""

from __future__ import annotations

import argparse
import json

from stages import atomic, cli, config, paths
from stages.errors import ParamsError, StageError


def parser() -> argparse.ArgumentParser:
    made = cli.parser(__doc__, command="stages.params", reads=[str(paths.PARAMS)],
                      writes=[str(paths.PARAMS_CHECKED)])
    made.add_argument("--schema", action="store_true", help="print the JSON Schema of params.yaml, write nothing")
    return made


def main(args: argparse.Namespace) -> None:
    if args.schema:
        print(json.dumps(config.schema(), indent=2))
        return
    try:
        p = config.load()
        # torch takes seconds to import: only when an accelerator is asked for, or bf16 that MPS refuses.
        if p.train.device in ("cuda", "mps") or (p.train.device == "auto" and p.train.precision == "bf16"):
            from stages.device import check_precision, resolve_device

            check_precision(p.train.precision, resolve_device(p.train.device))
    except (ParamsError, StageError) as exc:
        raise ParamsError(f"{exc}; no stage ran and no output changed "
                          f"(fix params.yaml, or undo the edit with `git checkout params.yaml`)") from None
    atomic.write_text(paths.PARAMS_CHECKED, "params.yaml passed `python -m stages.params`\n")


if __name__ == "__main__":
    cli.run(main, parser())
