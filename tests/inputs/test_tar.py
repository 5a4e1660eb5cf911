"""Tar shards: image members in stored order, others counted, damage, bytes, brace patterns,
compressed shards, and the members through `extract` as loose files go.

The shards are made here from the real photos in tests/data, laid out as img2dataset /
WebDataset write them (KEY.jpg beside KEY.json, KEY.txt, KEY.cls).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hostile_corpus import make_corpus
from media import PHOTOS, make_tar, webdataset_members
from paths import DATA

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.inputs import tar
from sapiens2_cli.inputs.decode import ImageError, decode_image
from sapiens2_cli.inputs.patterns import expand_braces
from sapiens2_cli.inputs.tar import (
    member_of,
    read_members,
    scan,
)

COMPRESS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}


@pytest.fixture
def shard(tmp_path):
    return make_tar(tmp_path / "00000.tar", webdataset_members(4))


def test_image_members_in_stored_order_and_the_rest_counted(shard):
    # Catches: sorting members (stored order is the sample order), taking .json/.txt/.cls
    # as images or failing on them, a clean tar reported as damaged.
    found = scan(str(shard))
    assert [m.name for m in found.members] == [
        "000000000.png", "000000001.jpg", "000000002.jpg", "000000003.jpg",
    ]  # fmt: skip
    assert found.skipped == 12 and found.damage is None


def test_member_bytes_read_back_equal_the_files(shard):
    # Catches: an offset of the header instead of the data, sizes off by the padding.
    found = scan(str(shard))
    photos = ["astronaut.png", "chelsea.jpg", "coffee.jpg", "hubble_deep_field.jpg"]
    for member, photo in zip(found.members, photos, strict=True):
        assert next(read_members(str(shard), [member])) == (DATA / photo).read_bytes()
    assert list(read_members(str(shard), found.members[2:])) == [
        (DATA / p).read_bytes() for p in photos[2:]
    ]


def test_names_and_folders_inside_the_tar_are_kept(tmp_path):
    # Long names (a pax header before the member) and folders inside the shard; upper-case
    # extensions; a repeated name is kept once. Catches: offsets wrong after a pax header,
    # extension matching that is case-sensitive, duplicate keys.
    jpg = (DATA / "chelsea.jpg").read_bytes()
    long_name = "a/" + "x" * 150 + ".JPG"
    path = make_tar(tmp_path / "s.tar", [(long_name, jpg), ("b/c.jpeg", jpg), ("b/c.jpeg", jpg)])
    found = scan(str(path))
    assert [m.name for m in found.members] == [long_name, "b/c.jpeg"]
    assert found.skipped == 1
    assert next(read_members(str(path), found.members[:1])) == jpg


def test_a_member_key_splits_at_the_tar_file_on_disk(tmp_path):
    # A folder named like a tar, holding a tar with a member named like one. Catches: a
    # key split at the last (or first) '.tar/' by its text, not where the file is.
    folder = tmp_path / "d.tar"
    folder.mkdir()
    make_tar(folder / "a.tar", [("b.tar/c.png", (DATA / "astronaut.png").read_bytes())])
    (folder / "p.png").write_bytes(b"x")
    assert member_of(f"{folder}/a.tar/b.tar/c.png") == (f"{folder}/a.tar", "b.tar/c.png")
    assert member_of(f"{folder}/p.png") is None  # a file on disk is no member
    assert member_of(f"{tmp_path}/gone.tar/c.png") is None


@pytest.mark.parametrize(
    ("where", "kept"),
    [("mid-member", 2), ("inside-a-header", 2), ("at-a-member-boundary", 2), ("first", 0)],
)
def test_a_truncated_tar_keeps_the_members_before_the_damage(shard, where, kept):
    # Catches: tarfile's silent stop at the cut (the lost members would vanish without a
    # failure record), the cut member listed with short bytes, the whole shard refused.
    found = scan(str(shard))
    third = found.members[2]
    header = third.offset - 512
    cut = {
        "mid-member": third.offset + third.size // 2,
        "inside-a-header": header + 100,
        "at-a-member-boundary": header,
        "first": 700,
    }[where]
    data = shard.read_bytes()
    shard.write_bytes(data[:cut])
    damaged = scan(str(shard))
    assert [m.name for m in damaged.members] == [m.name for m in found.members[:kept]]
    assert damaged.damage and damaged.damage.startswith(f"tar damaged after {kept} image")
    assert "\n" not in damaged.damage


def test_a_tar_cut_inside_its_first_members_long_name_is_damaged_not_refused(tmp_path):
    # A name over 100 bytes goes in a pax header ahead of the member: tarfile fails on
    # opening such a tar. Catches: calling it "not a tar" (no trace of its lost members).
    jpg = (DATA / "chelsea.jpg").read_bytes()
    whole = make_tar(tmp_path / "w.tar", [("x" * 150 + ".jpg", jpg)]).read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole[:700])
    found = scan(str(cut))
    assert found.members == [] and found.damage.startswith("tar damaged after 0 image")


def test_a_tar_cut_after_its_last_member_but_before_the_end_block_is_damaged(tmp_path):
    # Catches: a cut exactly at a member boundary passing as a complete shard.
    jpg = (DATA / "chelsea.jpg").read_bytes()
    whole = make_tar(tmp_path / "w.tar", [("a.jpg", jpg), ("b.jpg", jpg)])
    last = scan(str(whole)).members[-1]
    end = last.offset + last.size
    end += -end % 512  # the member's padding, not the end-of-archive blocks
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[:end])
    found = scan(str(cut))
    assert len(found.members) == 2 and "end-of-archive" in (found.damage or "")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"hello" * 300, "not a tar file"),
        (gzip.compress(b"hello" * 300), "not a tar file"),
        (lzma.compress(b"hello" * 300), "not a tar file"),
        (None, "file not found"),
    ],
    ids=["text", "gzipped-text", "xz-text", "missing"],
)
def test_a_file_that_is_not_a_tar_is_refused_in_one_line(tmp_path, content, reason):
    # Catches: a non-tar read as an empty shard (no failure record), a compressed file
    # that holds no tar read as one.
    path = tmp_path / "x.tar"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError) as caught:
        scan(str(path))
    assert reason in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("draft", [False, True])
@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_every_member_decodes_as_the_same_file_on_disk(tmp_path, resize, draft):
    # The hostile corpus (EXIF rotation, alpha, 16-bit, CMYK, palette, truncated, empty,
    # text, a bomb header) tarred up, with and without --jpeg-draft. Catches: the bytes
    # path skipping or reordering a step of decode_image, or giving another reason.
    good, bad = make_corpus(tmp_path / "corpus")
    files = sorted(good) + sorted(bad)
    shard = make_tar(
        tmp_path / "c.tar",
        [(f"{i}{Path(f).suffix}", Path(f).read_bytes()) for i, f in enumerate(files)],
    )
    members = scan(str(shard)).members
    assert len(members) == len(files)
    for member, data, path in zip(members, read_members(str(shard), members), files, strict=True):
        try:
            expected = decode_image(path, (64, 48), resize, draft)
        except ImageError as e:
            with pytest.raises(ImageError) as caught:
                decode_image(data, (64, 48), resize, draft)
            assert str(caught.value).split(":")[0] == str(e).split(":")[0], member.name
            continue
        got = decode_image(data, (64, 48), resize, draft)
        np.testing.assert_array_equal(got.pixels, expected.pixels, err_msg=path)
        assert (got.original_size, got.content_box) == (
            expected.original_size,
            expected.content_box,
        )


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "empty file"), (b"{json}", "not an image"), (None, "truncated or corrupt")],
)
def test_bad_member_bytes_give_one_line_reasons(data, reason):
    if data is None:
        data = (DATA / "chelsea.jpg").read_bytes()[:3000]
    with pytest.raises(ImageError, match=reason):
        decode_image(data, (64, 48))


def test_reading_members_of_a_shard_cut_since_the_scan_gives_reasons(shard):
    # Catches: short bytes handed to the decoder as if whole, or an exception escaping.
    members = scan(str(shard)).members
    shard.write_bytes(shard.read_bytes()[: members[1].offset + 10])
    got = list(read_members(str(shard), members))
    assert isinstance(got[0], bytes)
    assert all(isinstance(r, str) and "cut off" in r for r in got[1:])
    shard.unlink()
    assert [r[:20] for r in read_members(str(shard), members[:2])] == ["cannot read tar file"] * 2


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("shards/{00000..00003}.tar", [f"shards/{n:05d}.tar" for n in range(4)]),
        ("s/{8..11}.tar", ["s/8.tar", "s/9.tar", "s/10.tar", "s/11.tar"]),
        ("s/{098..101}.tar", ["s/098.tar", "s/099.tar", "s/100.tar", "s/101.tar"]),
        ("{3..1}", ["3", "2", "1"]),
        ("{0..10}", [str(n) for n in range(11)]),  # a lone 0 is not zero padding
        ("{8..010}", ["008", "009", "010"]),
        ("{a,b}/{0..1}.tar", ["a/0.tar", "a/1.tar", "b/0.tar", "b/1.tar"]),
        ("{train,val}.tar", ["train.tar", "val.tar"]),
        ("plain.tar", ["plain.tar"]),
    ],
)
def test_brace_patterns_expand_as_webdataset_does(pattern, expected):
    # Catches: zero padding lost (00001 -> 1), padding added where none was asked for,
    # only the first brace expanded, the order of combinations.
    assert expand_braces(pattern) == expected


@pytest.mark.parametrize("pattern", ["s/{0..3.tar", "s/}0.tar", "s/{x}.tar", "s/{}.tar"])
def test_malformed_brace_patterns_say_how_to_write_them(pattern):
    with pytest.raises(Sapiens2Error, match=r"\{0\.\.9\}"):
        expand_braces(pattern)


def test_folder_entries_are_neither_rows_nor_ignored_members(tmp_path):
    # `tar cf shard.tar photos/` stores an entry for each folder before its files.
    # Catches: those entries counted in "N members of tar files ignored: not images".
    photos = tmp_path / "photos"
    (photos / "a" / "b").mkdir(parents=True)
    shutil.copy(DATA / "chelsea.jpg", photos / "a" / "1.jpg")
    (photos / "a" / "1.json").write_text("{}")
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as archive:
        archive.add(photos, arcname="photos")
    with tarfile.open(path) as archive:
        assert sum(m.isdir() for m in archive.getmembers()) == 3  # photos, photos/a, a/b
    found = scan(str(path))
    assert [m.name for m in found.members] == ["photos/a/1.jpg"]
    assert found.skipped == 1 and found.damage is None


@pytest.mark.parametrize("kind", COMPRESS)
def test_a_compressed_shard_gives_the_members_of_the_plain_one(shard, tmp_path, kind):
    # Catches: a gzip, bzip2 or xz shard refused or read as garbage, offsets taken in the
    # compressed file instead of the tar inside it.
    packed = tmp_path / f"00000.tar.{kind}"
    packed.write_bytes(COMPRESS[kind](shard.read_bytes()))
    found = scan(str(packed))
    assert [m.name for m in found.members] == [
        "000000000.png", "000000001.jpg", "000000002.jpg", "000000003.jpg",
    ]  # fmt: skip
    assert found.skipped == 12 and found.damage is None
    got = list(read_members(str(packed), found.members))
    assert got == [(DATA / p).read_bytes() for p in PHOTOS]


def test_runs_of_a_compressed_shard_read_on_from_where_the_last_one_stopped(
    shard, tmp_path, monkeypatch
):
    # A decode worker gets a shard's runs of members in order. Catches: decompressing from
    # the first byte for every run (time quadratic in the shard's size), wrong bytes when
    # a run goes back, stale bytes from a kept stream after the file was written over.
    packed = tmp_path / "00000.tar.gz"
    packed.write_bytes(gzip.compress(shard.read_bytes()))
    members = scan(str(packed)).members
    photos = [(DATA / p).read_bytes() for p in PHOTOS]
    opened = []
    real_open = tar.open_tar
    monkeypatch.setattr(tar, "open_tar", lambda path: opened.append(path) or real_open(path))
    runs = [members[:1], members[1:3], members[3:]]
    assert [data for run in runs for data in read_members(str(packed), run)] == photos
    assert len(opened) == 1
    monkeypatch.setattr(tar.os, "getpid", lambda: -1)  # as in a forked decode worker
    assert list(read_members(str(packed), members[3:])) == photos[3:]
    assert len(opened) == 2  # its own file: a fork's offset would move its siblings'
    monkeypatch.undo()
    assert list(read_members(str(packed), members[:2])) == photos[:2]
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(gzip.compress(shard.read_bytes()[: members[1].offset + 10]))
    cut.replace(packed)  # a new file under the old name, as a shard is rewritten
    got = list(read_members(str(packed), members))
    assert got[0] == photos[0] and all("cut off" in r for r in got[1:])


@pytest.mark.parametrize("kind", ["gz", "xz"])  # bzip2 gives nothing of a cut block
def test_a_cut_compressed_shard_keeps_the_members_before_the_cut(shard, tmp_path, kind):
    # Catches: the decompressor's EOFError escaping (the shard lost, or the run stopped),
    # a cut member listed as whole, no failure record for the members lost.
    whole = COMPRESS[kind](shard.read_bytes())
    cut = tmp_path / f"cut.tar.{kind}"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    decompressor = zlib.decompressobj(wbits=31) if kind == "gz" else lzma.LZMADecompressor()
    readable = len(decompressor.decompress(cut.read_bytes()))
    expected = [m.name for m in scan(str(shard)).members if m.offset + m.size <= readable]
    assert 0 < len(expected) < 4
    found = scan(str(cut))
    assert [m.name for m in found.members] == expected
    assert found.damage.startswith(f"tar damaged after {len(expected)} image members")
    assert "\n" not in found.damage
    got = list(read_members(str(cut), found.members))
    assert got == [(DATA / p).read_bytes() for p in PHOTOS[: len(expected)]]
