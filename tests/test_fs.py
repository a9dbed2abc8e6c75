"""The one filesystem helper: the local rule, target checks, atomic commits."""

from __future__ import annotations

import os
import uuid

import pytest

from dgmm.errors import TargetExistsError, TargetNotWritableError
from dgmm.io import fs as fsio


def _memory(name: str) -> str:
    return f"memory://dgmm-fs-{uuid.uuid4().hex[:8]}/{name}"


def test_resolve_local_and_object_storage(tmp_path):
    local = fsio.resolve(tmp_path / "a" / "b/")
    assert local.local and local.path == str(tmp_path / "a" / "b")
    assert fsio.resolve(f"file://{tmp_path}/x").local
    remote = fsio.resolve(_memory("dir/"))
    assert not remote.local and not remote.path.endswith("/")
    assert remote.join("f") == f"{remote.path}/f"
    assert os.path.dirname(local.sibling("tmp")) == str(tmp_path / "a")
    assert os.path.basename(local.sibling("tmp")).startswith(".b.tmp-")


def test_check_target(tmp_path):
    (tmp_path / "taken").write_text("x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(TargetExistsError) as info:
        fsio.check_target(fsio.resolve(tmp_path / "taken"), overwrite=False, what="model", flag="--overwrite")
    assert "taken" in str(info.value) and "--overwrite" in str(info.value)
    fsio.check_target(fsio.resolve(tmp_path / "taken"), overwrite=True)
    fsio.check_target(fsio.resolve(tmp_path / "new" / "deeper"), overwrite=False)
    with pytest.raises(TargetNotWritableError, match="not a directory"):
        fsio.check_target(fsio.resolve(tmp_path / "file" / "out"), overwrite=False)


def test_replace_file_local_leaves_no_temporary(tmp_path):
    target = fsio.resolve(tmp_path / "f.bin")
    fsio.replace_file(target, b"one")
    fsio.replace_file(target, b"two")
    assert (tmp_path / "f.bin").read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    with pytest.raises(TargetNotWritableError, match="Cannot write the thing"):
        fsio.replace_file(fsio.resolve(tmp_path / "f.bin" / "x"), b"", what="the thing")


def test_replace_file_object_storage_is_one_put():
    location = fsio.resolve(_memory("f.bin"))
    fsio.replace_file(location, b"one")
    fsio.replace_file(location, b"two")
    assert location.fs.cat_file(location.path) == b"two"
    assert location.fs.ls(location.path.rsplit("/", 1)[0], detail=False) == [location.path]


def _finished(location: fsio.Location, content: str) -> str:
    tmp = location.sibling("tmp")
    os.mkdir(tmp)
    with open(os.path.join(tmp, "data"), "w") as f:
        f.write(content)
    return tmp


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_commit_dir_local_overwrite(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(fsio, "_exchange", lambda a, b: False)
    location = fsio.resolve(tmp_path / "out")
    fsio.commit_dir(location, _finished(location, "old"), overwrite=False)
    tmp = _finished(location, "new")
    with pytest.raises(TargetExistsError, match="someone else"):
        fsio.commit_dir(location, tmp, overwrite=False)
    assert (tmp_path / "out" / "data").read_text() == "old"
    fsio.commit_dir(location, _finished(location, "new"), overwrite=True, durable=True)
    assert (tmp_path / "out" / "data").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_commit_dir_object_storage_copies_last_names_last(monkeypatch):
    location = fsio.resolve(_memory("out"))
    fs = location.fs
    tmp = location.sibling("tmp")
    for name in ("a", "root.json", "b/c"):
        fs.pipe_file(f"{tmp}/{name}", name.encode())
    copied: list[str] = []
    real = type(fs).copy

    def recording(self, path1, path2, *args, **kwargs):
        copied.extend(path2)
        return real(self, path1, path2, *args, **kwargs)

    monkeypatch.setattr(type(fs), "copy", recording)
    fsio.commit_dir(location, tmp, overwrite=False, last=("root.json",))
    assert copied[-1].endswith("out/root.json") and len(copied) == 3
    assert fs.cat_file(location.join("b", "c")) == b"b/c" and not fs.exists(tmp)
