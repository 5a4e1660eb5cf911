"""`sapiens2 extract` on tar shards: brace patterns, --jpeg-draft in members, compressed shards,
resume in one. Shards beside photos and videos in one run are in test_extract_video.py;
reading a shard itself (members, damage, compression) in test_tar.py."""

from __future__ import annotations

import bz2
import gzip
import lzma
from pathlib import Path

import numpy as np
from extract_helpers import FAST, refusal, summary
from media import make_tar, webdataset_members
from paths import DATA, PHOTOS, copy_photos

from sapiens2_cli.output import open_features

#: Float32 features computed in float32, one image a batch: rows of the same pixels then
#: compare exactly.
EXACT = [*FAST, "--precision", "fp32", "--dtype", "float32", "--batch-size", "1"]


def rows_by_key(out: Path) -> dict[str, np.ndarray]:
    """OUT's rows by key."""
    with open_features(out) as f:
        return dict(zip(f.paths, f.read(slice(None)), strict=True))


def test_brace_patterns_name_shards(tmp_path):
    # Catches: a pattern taken as a missing file, shards left out, a missing shard passing.
    shards = tmp_path.resolve() / "in"
    shards.mkdir()
    make_tar(shards / "00000.tar", webdataset_members(3))
    make_tar(shards / "00001.tar", webdataset_members(2))
    out = tmp_path / "f.h5"
    summary(f"{shards}/{{00000..00001}}.tar", "-o", out, *FAST)
    with open_features(out) as f:
        assert len(f.paths) == 5
    reason = refusal(f"{shards}/{{00000..00002}}.tar", "-o", tmp_path / "g.h5", *FAST)
    assert "00002.tar" in reason and "does not exist" in reason


def test_jpeg_draft_decodes_a_member_as_the_same_jpeg_as_a_file(tmp_path):
    # Catches: --jpeg-draft dropped on the way to tar members, which would then decode at
    # full size while loose files (and OUT's settings) say draft.
    photo = (DATA / "hubble_deep_field.jpg").resolve()  # 480x419: 1/2 scale for 64x48
    tmp = tmp_path.resolve()
    shard = make_tar(tmp / "s.tar", [("0.jpg", photo.read_bytes())])
    packed = tmp / "s.tgz"
    packed.write_bytes(gzip.compress(shard.read_bytes()))
    got = {}
    for flag in ("--jpeg-draft", "--no-jpeg-draft"):
        summary(photo, shard, packed, "-o", tmp / f"{flag}.h5", flag, *EXACT)
        got[flag] = rows_by_key(tmp / f"{flag}.h5")
    draft, full = got["--jpeg-draft"], got["--no-jpeg-draft"]
    for member in (f"{shard}/0.jpg", f"{packed}/0.jpg"):
        np.testing.assert_array_equal(draft[member], draft[str(photo)])
        assert np.abs(draft[member] - full[member]).max() > 1e-3  # the flag changes pixels


def test_compressed_shards_named_or_in_a_folder_give_their_members(tmp_path):
    # Catches: a .tar.gz named on the command line read as one image ("not an image"),
    # compressed shards skipped by a folder walk, a compressed non-tar not recorded.
    folder = tmp_path.resolve() / "in"
    folder.mkdir()
    photos = [("0.jpg", DATA / "chelsea.jpg"), ("1.png", DATA / "astronaut.png")]
    plain = make_tar(tmp_path / "plain.tar", [(name, p.read_bytes()) for name, p in photos])
    shards = {"a.tar.gz": gzip, "b.tgz": gzip, "c.tar.bz2": bz2, "d.TAR.XZ": lzma}
    for name, codec in shards.items():
        (folder / name).write_bytes(codec.compress(plain.read_bytes()))
    (folder / "e.tar.gz").write_bytes(gzip.compress(b"not a tar\n" * 100))
    copy_photos(folder, ["chelsea.jpg"])
    summary(folder, "-o", tmp_path / "walked.h5", *EXACT)
    walked = rows_by_key(tmp_path / "walked.h5")
    loose = str(folder / "chelsea.jpg")
    members = [f"{folder}/{name}/{m}" for name in shards for m in ("0.jpg", "1.png")]
    assert sorted(walked) == sorted([*members, loose])
    for key in members[::2]:
        np.testing.assert_array_equal(walked[key], walked[loose])
    with open_features(tmp_path / "walked.h5") as f:
        ((key, reason),) = f.failed
    assert key == str(folder / "e.tar.gz") and reason.startswith("not a tar file")
    summary(folder / "a.tar.gz", "-o", tmp_path / "named.h5", *EXACT)
    named = rows_by_key(tmp_path / "named.h5")
    assert list(named) == members[:2]
    np.testing.assert_array_equal(named[members[0]], walked[loose])


def test_a_resume_inside_a_compressed_shard_reads_the_members_not_done(tmp_path):
    # The shard grows between the runs, as if the first had stopped after two members.
    # Catches: members done read again (rows twice), the rest read from the wrong place
    # in the decompressed stream once the done ones are skipped.
    tmp = tmp_path.resolve()
    members = [(f"{n}{Path(p).suffix}", (DATA / p).read_bytes()) for n, p in enumerate(PHOTOS)]
    packed, out = tmp / "s.tar.xz", tmp / "f.h5"
    for count in (2, 4):
        plain = make_tar(tmp / "plain.tar", members[:count])
        packed.write_bytes(lzma.compress(plain.read_bytes()))
        done = summary(packed, "-o", out, *EXACT)
    assert (done["skipped"], done["images"]) == (2, 2)
    copy_photos(tmp, {f"{n}{Path(p).suffix}": p for n, p in enumerate(PHOTOS)})  # the members
    summary(*[tmp / name for name, _ in members], "-o", tmp / "loose.h5", *EXACT)
    got, loose = rows_by_key(out), rows_by_key(tmp / "loose.h5")
    assert sorted(got) == sorted(f"{packed}/{name}" for name, _ in members)
    for name, _ in members:
        np.testing.assert_array_equal(got[f"{packed}/{name}"], loose[str(tmp / name)])
