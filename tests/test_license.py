"""The licence travels: the project's, and the notices of the code vega/page.html bundles."""

from tests.helpers import REPO


def test_the_bundled_plotting_code_keeps_its_copyright_notices_and_the_licence_names_them() -> None:
    page = (REPO / "vega" / "page.html").read_text()
    licence = (REPO / "LICENSE").read_text()
    assert licence.startswith("MIT License")
    for package in ("vega 5.20.2", "vega-lite 5.2.0", "vega-embed 6.18.2"):
        assert f"<!-- {package}, from npm, under this licence:" in page and package in licence
    assert page.count("University of Washington Interactive Data Lab") >= 3
    assert "Redistribution and use in source and binary forms" in page  # BSD-3-Clause's conditions, verbatim
    assert "Copyright (c) Microsoft Corporation." in page and "Joachim Wester" in page
