"""Build vega/page.html: DVC's plots page with vega, vega-lite and vega-embed inlined, so that
`dvc plots show` and `dvc plots diff` draw with no network (.dvc/config's plots.html_template).

    cd "$(mktemp -d)" && npm pack vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2 && cd - &&
    python -m vega.build_page "$OLDPWD"

The versions are the ones DVC's own page loads from a CDN (dvc_render's vega renderer), so the
plots draw as DVC draws them. Each tarball is checked against the npm registry's sha512 before use,
and each library's BSD-3-Clause licence goes into the page beside its code.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).parent
PAGE = HERE / "page.html"
# name, version, the npm registry's integrity of its tarball (`npm view vega@5.20.2 dist.integrity`)
LIBRARIES = (
    ("vega", "5.20.2",
     "qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw=="),
    ("vega-lite", "5.2.0",
     "Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw=="),
    ("vega-embed", "6.18.2",
     "wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg=="),
)
# DVC's page (dvc_render.html.PAGE_HTML) with the libraries inlined. Its {scripts} placeholder stays, inside an
# inert <template>: DVC fills it with <script src> tags of the CDN, which a browser never loads from there.
TEMPLATE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <title>DVC Plot</title>
    <meta charset="utf-8">
{libraries}
    <template id="dvc-cdn-scripts">{{scripts}}</template>
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def library(tarball: Path, name: str, version: str, integrity: str) -> str:
    """A <script> element with the library's minified build, its licence in a comment before it."""
    digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if digest != integrity:
        raise SystemExit(f"{tarball}: sha512 {digest} is not the npm registry's {integrity} for {name}@{version}")
    with tarfile.open(tarball) as archive:
        code = archive.extractfile(f"package/build/{name}.min.js").read().decode()
        licence = archive.extractfile("package/LICENSE").read().decode()
    # The source map is not shipped: a browser's developer tools would ask the network for it.
    code = "\n".join(line for line in code.splitlines() if not line.startswith("//# sourceMappingURL="))
    if "</script" in code or "-->" in licence:
        raise SystemExit(f"{tarball}: its code or licence would end the element it is inlined in")
    return f"    <!-- {name} {version}, from npm, under this licence:\n{licence}-->\n    <script>{code}</script>"


def main(folder: str) -> None:
    parts = [library(Path(folder) / f"{name}-{version}.tgz", name, version, integrity)
             for name, version, integrity in LIBRARIES]
    PAGE.write_text(TEMPLATE.format(libraries="\n".join(parts)), encoding="utf8")
    print(f"{PAGE}: {PAGE.stat().st_size:,} bytes")


if __name__ == "__main__":
    main(*sys.argv[1:])
