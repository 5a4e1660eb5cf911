"""npy outputs at a bucket prefix, against the local S3 server (moto honours If-Match and
If-None-Match on PUT, as S3 does): two runs on one prefix, the order of a commit's
uploads, a resume that finds listed objects gone, and what such an OUT refuses."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from extract_helpers import FAST, FP32, extract
from media import DATA, PHOTOS

from sapiens2_cli.engine.url_output import check_url_output
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output import open_features
from sapiens2_cli.output.npy.writer import MANIFEST, listed_files
from sapiens2_cli.output.url import staged
from sapiens2_cli.output.url.store import Store
from sapiens2_cli.remote import check_url

BUCKET = "commits"
ARGS = [*FAST, *FP32, "--rows-per-shard", "1"]


@pytest.fixture
def bucket(s3):
    if not s3.exists(BUCKET):
        s3.mkdir(BUCKET)
    return s3


@pytest.fixture
def photos(tmp_path):
    """Two folders of two photos each: the inputs of two different runs."""
    folders = [tmp_path / "a", tmp_path / "b"]
    for n, folder in enumerate(folders):
        folder.mkdir()
        for photo in PHOTOS[2 * n : 2 * n + 2]:
            shutil.copy(DATA / photo, folder / photo)
    return folders


def keys(out) -> list[str]:
    with open_features(out) as f:
        f.read(slice(None))  # every listed shard is there
        return list(f.paths)


def one_line(result) -> str:
    assert isinstance(result.exception, Sapiens2Error), result.output
    message = str(result.exception)
    assert "\n" not in message
    return message


def test_two_runs_on_one_bucket_prefix_lose_no_rows(bucket, photos, monkeypatch):
    # Run b starts and finishes while run a, started at the same time (both saw an empty
    # prefix), is about to make its first commit: a's commit must not replace b's.
    url = f"s3://{BUCKET}/together/"
    commit, started = staged.Upload.commit, []

    def commit_after_the_other_run(self, folder, manifest, prune=False):
        if not started:
            started.append(True)
            other = extract(photos[1], *ARGS, "-o", url)
            assert other.exit_code == 0, other.output
        return commit(self, folder, manifest, prune)

    monkeypatch.setattr(staged.Upload, "commit", commit_after_the_other_run)
    first = extract(photos[0], *ARGS, "-o", url)
    assert "another run committed to" in one_line(first)
    assert sorted(keys(url)) == sorted(str(p) for p in photos[1].iterdir())
    monkeypatch.setattr(staged.Upload, "commit", commit)
    again = extract(photos[0], *ARGS, "-o", url)  # resumes the other run's output
    assert again.exit_code == 0, again.output
    got = keys(url)
    assert sorted(got) == sorted(str(p) for folder in photos for p in folder.iterdir())


def test_a_run_whose_commit_loses_stops_and_keeps_what_the_other_committed(bucket, photos):
    # Two writers of one prefix mid-run: the second to commit stops with one line.
    url = f"s3://{BUCKET}/midrun/"
    assert extract(photos[0], *ARGS, "-o", url).exit_code == 0
    with (
        staged.staged_output(url, False) as (_, late),
        staged.staged_output(url, False) as (
            folder,
            early,
        ),
    ):
        manifest = json.loads((folder / MANIFEST).read_text())
        manifest["complete"] = False  # what a resume commits first
        (folder / MANIFEST).write_text(json.dumps(manifest))
        early.commit(folder, manifest)
        with pytest.raises(Sapiens2Error, match="another run committed to"):
            late.commit(folder, manifest)
    assert sorted(keys(url)) == sorted(str(p) for p in photos[0].iterdir())


def test_a_store_without_conditional_writes_is_refused_unless_accepted(photos):
    url = "memory://unguarded/feats/"
    refused = extract(photos[0], *ARGS, "-o", url)
    assert "--unguarded-commits" in one_line(refused)
    accepted = extract(photos[0], *ARGS, "-o", url, "--unguarded-commits")
    assert accepted.exit_code == 0, accepted.output
    assert sorted(keys(url)) == sorted(str(p) for p in photos[0].iterdir())


def test_output_to_a_bucket_that_does_not_exist_is_one_line(s3, photos):
    result = extract(photos[0], *ARGS, "-o", "s3://no-such-bucket/feats/")
    message = one_line(result)
    assert "s3://no-such-bucket/feats/" in message and "bucket" in message


def test_the_manifest_is_uploaded_after_the_shards_it_lists(bucket, photos, monkeypatch):
    url, stored = f"s3://{BUCKET}/order/", set()
    put, commit = Store.put, Store.commit

    def put_seen(self, local, name, create=False):
        put(self, local, name, create)
        stored.add(name)

    def commit_seen(self, data, name, version):
        if name == MANIFEST:
            missing = listed_files(json.loads(data)) - stored - {MANIFEST}
            assert not missing, f"the manifest lists {missing} before they are uploaded"
        return commit(self, data, name, version)

    monkeypatch.setattr(Store, "put", put_seen)
    monkeypatch.setattr(Store, "commit", commit_seen)
    result = extract(photos[0], *ARGS, "-o", url)
    assert result.exit_code == 0, result.output
    assert len(keys(url)) == 2


def test_a_resume_at_a_url_uploads_listed_files_the_store_lost(bucket, photos):
    # A listed small file gone from the store (a lifecycle rule, a hand): the resume must
    # not take it as there, or the output lists a file nobody can read.
    url = f"s3://{BUCKET}/lost/"
    assert extract(photos[0], *ARGS, "-o", url).exit_code == 0
    with open_features(url) as f:
        want = dict(zip(f.paths, f.read(slice(None)), strict=True))
    manifest = json.loads(bucket.cat_file(f"{BUCKET}/lost/{MANIFEST}"))
    lost = manifest["shards"][0]["paths"]
    bucket.rm(f"{BUCKET}/lost/{lost}")
    again = extract(photos[0], *ARGS, "-o", url)
    if again.exit_code != 0:  # refused in one line, the output as it was
        one_line(again)
        return
    with open_features(url) as f:
        got = dict(zip(f.paths, f.read(slice(None)), strict=True))
    assert got.keys() == want.keys()
    for key, row in want.items():
        np.testing.assert_array_equal(got[key], row)


def test_errors_of_a_url_run_name_the_url_not_the_staging_folder(bucket, photos):
    url = f"s3://{BUCKET}/named/"
    assert extract(photos[0], *ARGS, "-o", url).exit_code == 0
    changed = extract(photos[0], *FAST, *FP32, "--rows-per-shard", "1", "-o", url, "--pool", "2")
    message = one_line(changed)
    assert url.rstrip("/") in message and "sapiens2-staging" not in message


def test_project_with_a_url_out_is_refused(tmp_path):
    from sapiens2_cli.config.options import ExtractOptions

    opts = ExtractOptions(project=tmp_path / "p.safetensors")
    with pytest.raises(Sapiens2Error, match="--project"):
        check_url_output("s3://b/feats/", opts, parted=False)


@pytest.mark.parametrize("url", ["s3://KEY@bucket/feats/", "s3://KEY:SECRET@bucket/feats/"])
def test_a_url_with_a_user_and_no_password_is_refused(url):
    with pytest.raises(Sapiens2Error, match="carries credentials"):
        check_url(url)
