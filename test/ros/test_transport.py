"""Clouds of a real depth camera between two processes: 640x480 organized clouds (about
4.9 MB) and 1280x720 RGB images at 10 Hz with the node's input QoS (best effort). With
config/fastdds_single_host.xml (shared memory sized for them) they arrive; the counts with
the middleware's defaults are printed for comparison, not asserted (they depend on the
machine; typically a few of 30)."""
from __future__ import annotations

import os

import pytest
from large_message_probe import run_pair

FRAMES = 30


@pytest.fixture(scope="module")
def domain_id():
    return 201 + os.getpid() % 30  # apart from the other tests' domains (1..200)


def test_large_clouds_arrive_with_the_single_host_profile(domain_id, capsys):
    default = run_pair(FRAMES, profile=False, domain_id=domain_id)
    shipped = run_pair(FRAMES, profile=True, domain_id=domain_id)
    with capsys.disabled():
        for r in (default, shipped):
            print(f"\n  {'single-host profile' if r['profile'] else 'middleware defaults'}: "
                  f"{r['cloud']}/{FRAMES} clouds, {r['image']}/{FRAMES} images")
    assert shipped["matched"], "the subscriber was not discovered"
    # nearly all: a loaded machine may still lose a frame to the subscriber's keep-last 5
    assert shipped["cloud"] >= FRAMES - 3 and shipped["image"] >= FRAMES - 3, (shipped, default)
