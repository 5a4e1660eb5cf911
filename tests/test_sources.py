"""Which files a run covers, and in which order."""

from __future__ import annotations

import io
import os

import pytest

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.pipeline.sources import list_images, walk_images


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return str(path)


def test_walk_is_recursive_sorted_and_case_insensitive(tmp_path):
    for name in ("b/z.PNG", "b/a.jpg", "a.b/c.jpeg", "a/x.Tif", "top.webp", "skip.txt", "c/d"):
        touch(tmp_path / name)
    found = walk_images(str(tmp_path))
    rel = [os.path.relpath(p, tmp_path) for p in found]
    assert rel == ["a/x.Tif", "a.b/c.jpeg", "b/a.jpg", "b/z.PNG", "top.webp"]
    assert found[0] == os.path.join(str(tmp_path), "a/x.Tif")  # the folder joined as given


def test_paths_keep_the_folder_as_typed(tmp_path, monkeypatch):
    touch(tmp_path / "photos/one.jpg")
    monkeypatch.chdir(tmp_path)
    assert list_images(["photos/"]) == ["photos/one.jpg"]
    assert list_images(["./photos"]) == ["./photos/one.jpg"]


def test_files_stdin_and_lists_combine_without_duplicates(tmp_path):
    a, b = touch(tmp_path / "d/a.png"), touch(tmp_path / "b.gif")
    listed = tmp_path / "list.txt"
    listed.write_text(f"{b}\n\n{tmp_path / 'missing.jpg'}\n")
    stdin = io.StringIO(f"{a}\n{tmp_path / 'd'}\n")
    got = list_images([b, "-", str(tmp_path / "d")], [listed], stdin)
    # listed paths are kept as given even if missing: they become failure records later
    assert got == [b, a, str(tmp_path / "missing.jpg")]


def test_bad_inputs_stop_before_any_work(tmp_path):
    with pytest.raises(Sapiens2Error, match="does not exist"):
        list_images([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(Sapiens2Error, match="no images found"):
        list_images([str(tmp_path / "empty")])
    with pytest.raises(Sapiens2Error, match="cannot read --files-from"):
        list_images([], [tmp_path / "no-list.txt"])
