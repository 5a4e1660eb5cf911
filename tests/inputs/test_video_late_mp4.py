"""A late-starting MP4 (no DURATION tag: the stream's `duration` counts from its
`start_time`): whole, it is not taken for a truncated one."""

from __future__ import annotations

from fractions import Fraction

import pytest
from media import make_video

from sapiens2_cli.inputs.video.probe import probe


@pytest.mark.parametrize("start", [1.0, 5.0])
def test_a_late_starting_mp4_is_not_taken_for_a_truncated_one(tmp_path, start):
    times = [Fraction(start).limit_denominator() + Fraction(i, 10) for i in range(30)]
    path = make_video(tmp_path / "late.mp4", times=times)
    found = probe(str(path), fps=1)
    assert found.damage is None and found.total == 30
    assert [f.timestamp for f in found.frames] == [0.0, 1.0, 2.0]


def test_a_late_starting_mp4_cut_short_is_found_truncated_by_its_duration():
    # A stream that lists no frame count (only its duration, from start_time): the last
    # frame is compared with start + duration, on the one clock.
    from types import SimpleNamespace

    from sapiens2_cli.inputs.video.probe import _short

    base = Fraction(1, 1000)
    stream = SimpleNamespace(
        frames=0, time_base=base, start_time=10_000, duration=4_000, metadata={}
    )
    cut = list(range(10_000, 11_000, 100))  # frames from 10 s to 10.9 s of 10 s to 14 s
    assert _short(stream, cut) == "the container declares 4.000 s"
    whole = list(range(10_000, 14_000, 100))
    assert _short(stream, whole) is None
