"""Which files a run covers, in which order, and what identifies each."""

from __future__ import annotations

import io
import os

import pytest

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.inputs.items import derived_key, file_key, split_key
from sapiens2_cli.inputs.sources import ImageSource, Listing, expand, list_files, walk


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return str(path)


def test_walk_is_recursive_sorted_and_case_insensitive(tmp_path):
    for name in ("b/z.PNG", "b/a.jpg", "a.b/c.jpeg", "a/x.Tif", "top.webp", "skip.txt", "c/d"):
        touch(tmp_path / name)
    found = walk(str(tmp_path))
    rel = [os.path.relpath(p, tmp_path) for p in found]
    assert rel == ["a/x.Tif", "a.b/c.jpeg", "b/a.jpg", "b/z.PNG", "top.webp"]


def test_hidden_files_and_folders_are_skipped_unless_asked(tmp_path):
    """Catches: macOS ._ resource forks and .thumbnails/ caches extracted as photos."""
    for name in ("a.jpg", "._a.jpg", ".thumbnails/t.jpg", "d/.hidden.png", "d/b.png"):
        touch(tmp_path / name)
    rel = [os.path.relpath(p, tmp_path) for p in walk(str(tmp_path))]
    assert rel == ["a.jpg", "d/b.png"]
    everything = walk(str(tmp_path), Listing(hidden=True))
    assert len(everything) == 5


def test_one_file_reached_by_several_spellings_is_one_input(tmp_path, monkeypatch):
    """Catches: './a.jpg', 'a.jpg', an absolute path and a symlinked folder becoming four
    rows, and a resume from another working folder redoing everything."""
    real = touch(tmp_path / "photos/one.jpg")
    os.symlink(tmp_path / "photos", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    got = list_files(["photos/one.jpg", "./photos/one.jpg", real, "link", "photos/"])
    assert got == [os.path.realpath(real)]
    monkeypatch.chdir(tmp_path / "photos")
    assert list_files(["one.jpg"]) == got  # the same identity from elsewhere


def test_files_stdin_and_lists_combine_without_duplicates(tmp_path):
    a, b = touch(tmp_path / "d/a.png"), touch(tmp_path / "b.gif")
    listed = tmp_path / "list.txt"
    listed.write_text(f"{b}\n\n{tmp_path / 'missing.jpg'}\n")
    stdin = io.BytesIO(f"{a}\n{tmp_path / 'd'}\n".encode())
    got = list_files([b, "-", str(tmp_path / "d")], [listed], stdin)
    # listed paths are kept even if missing: they become failure records later
    assert got == [b, a, str(tmp_path / "missing.jpg")]


def test_null_separated_lists_and_names_that_are_not_utf8(tmp_path):
    """Catches: find -print0 input split on newlines, and non-UTF-8 names (which Linux
    allows) raising UnicodeDecodeError or coming back as other bytes."""
    odd = os.fsdecode(b"caf\xe9\nnew line.jpg")
    touch(tmp_path / odd)
    stdin = io.BytesIO(os.fsencode(str(tmp_path / odd)) + b"\0")
    got = list_files(["-"], stdin=stdin, listing=Listing(null=True))
    assert got == [str(tmp_path / odd)]
    assert os.fsencode(got[0]).endswith(b"caf\xe9\nnew line.jpg")  # the same bytes back


def test_a_binary_file_list_is_refused_in_one_line(tmp_path):
    """Catches: --files-from given a binary file decoding to garbage paths or a traceback."""
    binary = tmp_path / "list.bin"
    binary.write_bytes(b"\x00\x01\x02\xff\xfe" * 10)
    with pytest.raises(Sapiens2Error, match="NUL bytes"):
        list_files([], [binary])


def test_bad_inputs_stop_before_any_work(tmp_path):
    with pytest.raises(Sapiens2Error, match="does not exist"):
        list_files([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(Sapiens2Error, match="no input files found"):
        list_files([str(tmp_path / "empty")])
    with pytest.raises(Sapiens2Error, match="cannot read --files-from"):
        list_files([], [tmp_path / "no-list.txt"])
    with pytest.raises(Sapiens2Error, match="no inputs given"):
        list_files([])


def test_each_image_file_is_one_item_keyed_by_its_identity(tmp_path):
    files = [touch(tmp_path / "a.jpg"), touch(tmp_path / "b.png")]
    expansion = expand(files, [ImageSource()])
    assert [(i.key, i.file) for i in expansion.items] == [(f, f) for f in files]
    assert not expansion.failures and expansion.ignored == 0


@pytest.mark.parametrize(
    ("path", "fragment", "key"),
    [
        ("/d/a.jpg", None, "/d/a.jpg"),  # no '#': the path is the key
        ("/d/clip.mp4", "t=1.000", "/d/clip.mp4#t=1.000"),
        ("/d/clip.mp4#t=1.000", None, "/d/clip.mp4##t=1.000"),  # a photo named like a frame
        ("/d/a#b/x.jpg#", "box=3", "/d/a##b/x.jpg###box=3"),
        ("/d/s.tar/m#1.png", None, "/d/s.tar/m##1.png"),  # a tar member: TAR/MEMBER
        ("/d/hfr.mp4", "t=0.001&frame=2", "/d/hfr.mp4#t=0.001&frame=2"),
    ],
)
def test_keys_escape_hash_and_read_back(path, fragment, key):
    """Catches: a photo named 'clip.mp4#t=1.000' keyed like that frame of clip.mp4 (two
    rows with one key, or the frame skipped as done), keys that do not split back."""
    made = file_key(path) if fragment is None else derived_key(path, fragment)
    assert made == key
    assert split_key(key) == (path, fragment)
