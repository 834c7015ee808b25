"""The docker CLI's stats formulas and the guard's pure decisions.

The recorded samples are real ``GET /containers/{id}/stats`` answers of the test dockerd
(Debian 20.10.24, cgroup v1, 2 CPUs). The real-engine comparison with ``docker stats`` itself
is in test_guard.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casemate.edge.stats import (
    BreachTracker,
    CpuStats,
    MemoryStats,
    StatsSample,
    choose_victim,
    cpu_percent,
    measure,
    memory_percent,
    memory_usage,
    parse_docker_time,
)

# `sh -c 'while :; do :; done'`, no memory limit (limit is the host's memory).
HOG = json.loads("""{
 "read":"2026-11-23T11:08:58.48194129Z","preread":"2026-11-23T11:08:57.474366981Z",
 "pids_stats":{"current":1},"num_procs":0,"storage_stats":{},
 "cpu_stats":{"cpu_usage":{"total_usage":4114772024,"percpu_usage":[4003040757,111731267],
   "usage_in_kernelmode":0,"usage_in_usermode":4110000000},
   "system_cpu_usage":7715130000000,"online_cpus":2,
   "throttling_data":{"periods":0,"throttled_periods":0,"throttled_time":0}},
 "precpu_stats":{"cpu_usage":{"total_usage":3168423687,"percpu_usage":[3056692420,111731267],
   "usage_in_kernelmode":0,"usage_in_usermode":3160000000},
   "system_cpu_usage":7713120000000,"online_cpus":2,
   "throttling_data":{"periods":0,"throttled_periods":0,"throttled_time":0}},
 "memory_stats":{"usage":606208,"max_usage":3817472,"stats":{"active_anon":4096,
   "active_file":0,"cache":0,"inactive_anon":57344,"inactive_file":0,"rss":61440,
   "total_active_anon":4096,"total_active_file":0,"total_cache":0,
   "total_inactive_anon":57344,"total_inactive_file":0,"total_rss":61440},
   "limit":25276502016},
 "name":"/hog","id":"afb366bf4515ad738e4e2a9ce641fb4291e024e0564bb7c2237ef2fd7ae33104"}""")

# `--memory 64m`, 40 MiB written to /dev/shm and 16 MiB to a file, then `sleep`. At the same
# moment `docker stats --no-stream` printed MemUsage "41.17MiB / 64MiB", MemPerc "64.33%",
# CPUPerc "0.00%".
SHM = json.loads("""{
 "read":"2026-11-23T11:15:12.769404891Z","preread":"2026-11-23T11:15:11.763178128Z",
 "pids_stats":{"current":1},
 "cpu_stats":{"cpu_usage":{"total_usage":42202324,"percpu_usage":[15925312,26277012],
   "usage_in_kernelmode":30000000,"usage_in_usermode":0},
   "system_cpu_usage":8460410000000,"online_cpus":2},
 "precpu_stats":{"cpu_usage":{"total_usage":42202324,"percpu_usage":[15925312,26277012],
   "usage_in_kernelmode":30000000,"usage_in_usermode":0},
   "system_cpu_usage":8458390000000,"online_cpus":2},
 "memory_stats":{"usage":59949056,"max_usage":61161472,"stats":{"active_anon":434176,
   "active_file":0,"cache":58720256,"hierarchical_memory_limit":67108864,
   "inactive_anon":41558016,"inactive_file":16777216,"rss":49152,
   "total_active_anon":434176,"total_active_file":0,"total_cache":58720256,
   "total_inactive_anon":41558016,"total_inactive_file":16777216,"total_rss":49152},
   "limit":67108864},
 "name":"/shm","id":"d4fc0ce432688f1af1073004e529548f695382d96cab3c5cabea494918afd784"}""")

# The first object of a stats stream: precpu_stats is all zeros.
FIRST = {
    **HOG,
    "preread": "0001-01-01T00:00:00Z",
    "precpu_stats": {"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0, "online_cpus": 0},
}

# What the stream sends once the container has stopped (until it is removed).
STOPPED = json.loads("""{
 "read":"0001-01-01T00:00:00Z","preread":"2026-11-23T11:09:26.618608431Z","pids_stats":{},
 "blkio_stats":{"io_service_bytes_recursive":null},"num_procs":0,"storage_stats":{},
 "cpu_stats":{"cpu_usage":{"total_usage":0,"usage_in_kernelmode":0,"usage_in_usermode":0},
   "throttling_data":{"periods":0,"throttled_periods":0,"throttled_time":0}},
 "precpu_stats":{"cpu_usage":{"total_usage":21035566,"percpu_usage":[10000000,11035566]},
   "system_cpu_usage":7740000000000,"online_cpus":2},
 "memory_stats":{},"name":"/quiet","id":"5d7f"}""")

# The shape dockerd gives on a cgroup v2 host (no percpu_usage, no total_* keys). Built by
# hand: the test machine has cgroup v1.
V2 = {
    "read": "2026-11-23T12:00:01Z",
    "cpu_stats": {
        "cpu_usage": {"total_usage": 3_000_000_000},
        "system_cpu_usage": 40_000_000_000,
        "online_cpus": 4,
    },
    "precpu_stats": {
        "cpu_usage": {"total_usage": 2_500_000_000},
        "system_cpu_usage": 36_000_000_000,
        "online_cpus": 4,
    },
    "memory_stats": {
        "usage": 100 * 2**20,
        "limit": 256 * 2**20,
        "stats": {"anon": 60 * 2**20, "file": 40 * 2**20, "inactive_file": 30 * 2**20},
    },
    "name": "/v2",
    "id": "abc",
}


def sample(data: dict[str, Any]) -> StatsSample:
    return StatsSample.from_json(data)


# -- formulas ---------------------------------------------------------------------------------


def test_cpu_of_a_recorded_hog_sample() -> None:
    s = sample(HOG)
    # (4114772024 - 3168423687) / (7715130000000 - 7713120000000) * 2 CPUs * 100
    assert cpu_percent(s.precpu, s.cpu) == pytest.approx(946348337 / 2010000000 * 2 * 100)
    assert cpu_percent(s.precpu, s.cpu) == pytest.approx(94.164, abs=1e-3)


def test_memory_of_a_recorded_sample_matches_what_docker_stats_printed() -> None:
    s = sample(SHM)
    assert s.memory is not None
    # cgroup v1: usage - total_inactive_file, the reclaimable file cache
    assert memory_usage(s.memory) == 59949056 - 16777216
    assert f"{memory_usage(s.memory) / 2**20:.2f}MiB" == "41.17MiB"
    assert f"{memory_percent(s):.2f}%" == "64.33%"
    assert cpu_percent(s.precpu, s.cpu) == 0.0  # idle: a real zero, not "unknown"


def test_memory_without_cache_to_subtract_is_plain_usage() -> None:
    s = sample(HOG)
    assert memory_percent(s) == pytest.approx(606208 / 25276502016 * 100)


def test_first_sample_of_a_stream_has_no_cpu_but_has_memory() -> None:
    s = sample(FIRST)
    assert s.precpu is None
    assert cpu_percent(s.precpu, s.cpu) is None
    m = measure(s)
    assert m is not None
    assert m.cpu_percent is None
    assert m.memory_percent == pytest.approx(606208 / 25276502016 * 100)


def test_sample_of_a_stopped_container_measures_nothing() -> None:
    s = sample(STOPPED)
    assert s.read is None
    assert s.cpu is None
    assert s.memory is None
    assert measure(s) is None
    assert memory_percent(s) is None


def test_cgroup_v2_shape() -> None:
    s = sample(V2)
    assert s.cpu is not None
    assert s.cpu.percpu_count == 0
    # (0.5 s / 4 s) * 4 CPUs * 100
    assert cpu_percent(s.precpu, s.cpu) == pytest.approx(50.0)
    assert s.memory is not None
    assert s.memory.total_inactive_file is None
    assert memory_usage(s.memory) == 70 * 2**20
    assert memory_percent(s) == pytest.approx(70 / 256 * 100)


def test_online_cpus_falls_back_to_the_percpu_list() -> None:
    prev = CpuStats(total_usage=0, system_usage=0 + 1, online_cpus=0, percpu_count=3)
    cur = CpuStats(total_usage=1_000, system_usage=1 + 3_000, online_cpus=0, percpu_count=3)
    assert cpu_percent(prev, cur) == pytest.approx(1_000 / 3_000 * 3 * 100)
    no_count = CpuStats(total_usage=1_000, system_usage=3_001, online_cpus=0, percpu_count=0)
    assert cpu_percent(prev, no_count) is None  # the CLI would print 0.00%


def test_online_cpus_wins_over_the_percpu_list() -> None:
    prev = CpuStats(total_usage=0, system_usage=1, online_cpus=2, percpu_count=64)
    cur = CpuStats(total_usage=500, system_usage=1_001, online_cpus=2, percpu_count=64)
    assert cpu_percent(prev, cur) == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("prev", "cur"),
    [
        pytest.param((5_000, 1_000), (1_000, 2_000), id="container-counter-reset"),
        pytest.param((1_000, 2_000), (2_000, 2_000), id="no-system-time"),
        pytest.param((1_000, 3_000), (2_000, 2_000), id="system-counter-backwards"),
        pytest.param((1_000, None), (2_000, 3_000), id="missing-system"),
        pytest.param((None, 1_000), (2_000, 3_000), id="missing-total"),
    ],
)
def test_cpu_unknown(prev: tuple[int | None, int | None], cur: tuple[int, int]) -> None:
    a = CpuStats(total_usage=prev[0], system_usage=prev[1], online_cpus=2)
    b = CpuStats(total_usage=cur[0], system_usage=cur[1], online_cpus=2)
    assert cpu_percent(a, b) is None
    assert cpu_percent(None, b) is None
    assert cpu_percent(b, None) is None


@pytest.mark.parametrize(
    ("usage", "total_inactive", "inactive", "expected"),
    [
        (100, 30, 50, 70),  # v1 key present and below usage: v1 wins
        (100, 100, 50, 50),  # v1 key not below usage: falls through to the v2 key (as Go does)
        (100, 150, None, 100),  # ... and a missing v2 key counts as 0
        (100, None, 40, 60),  # v2
        (100, None, 100, 100),  # v2 key not below usage: plain usage
        (100, None, None, 100),
        (0, None, None, 0),
    ],
)
def test_memory_usage_branches(
    usage: int, total_inactive: int | None, inactive: int | None, expected: int
) -> None:
    mem = MemoryStats(
        usage=usage, limit=1000, total_inactive_file=total_inactive, inactive_file=inactive
    )
    assert memory_usage(mem) == expected
    assert memory_percent(mem) == pytest.approx(expected / 10)


def test_memory_percent_without_limit_is_unknown() -> None:
    assert memory_percent(MemoryStats(usage=100, limit=0)) is None


def test_ill_typed_fields_are_unknown_not_errors() -> None:
    s = sample(
        {
            "read": "yesterday",
            "cpu_stats": {"cpu_usage": {"total_usage": "1"}, "system_cpu_usage": -5},
            "precpu_stats": [],
            "memory_stats": {"usage": True, "limit": 5},
            "name": 7,
            "id": None,
        }
    )
    assert s == StatsSample(container_id="", name="", read=None, cpu=None, precpu=None, memory=None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=12,
)
cpu_json = st.fixed_dictionaries(
    {
        "cpu_usage": st.fixed_dictionaries(
            {"total_usage": st.integers(0, 2**64 - 1) | json_values},
            optional={"percpu_usage": st.lists(st.integers(0, 2**40)) | json_values},
        ),
        "system_cpu_usage": st.integers(0, 2**64 - 1) | json_values,
    },
    optional={"online_cpus": st.integers(0, 256) | json_values},
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "read": st.text() | st.just("2026-01-01T00:00:00.123456789Z") | json_values,
            "cpu_stats": cpu_json | json_values,
            "precpu_stats": cpu_json | json_values,
            "memory_stats": json_values
            | st.fixed_dictionaries(
                {"usage": st.integers(0, 2**64 - 1), "limit": st.integers(0, 2**64 - 1)},
                optional={"stats": st.dictionaries(st.text(), st.integers(0, 2**64 - 1))},
            ),
            "name": json_values,
            "id": json_values,
        },
    )
)
def test_any_json_decodes_and_measures_without_error(data: dict[str, Any]) -> None:
    s = StatsSample.from_json(data)
    m = measure(s)
    if m is not None:
        assert m.cpu_percent is None or m.cpu_percent >= 0
        assert m.memory_percent is None or m.memory_percent >= 0


def test_docker_times() -> None:
    assert parse_docker_time("2026-11-23T11:08:58.48194129Z") == datetime(
        2026, 11, 23, 11, 8, 58, 481941, tzinfo=UTC
    )
    assert parse_docker_time("2026-11-23T12:08:58.5+01:00") == datetime(
        2026, 11, 23, 11, 8, 58, 500000, tzinfo=UTC
    )
    for zero in ("0001-01-01T00:00:00Z", "", "now", None, 5):
        assert parse_docker_time(zero) is None


# -- breach tracking --------------------------------------------------------------------------


def tracker(window: float = 2.0, **kwargs: Any) -> BreachTracker:
    options: dict[str, Any] = {"cpu_percent": 50.0, "memory_percent": 80.0, "max_gap": 5.0}
    options.update(kwargs)
    return BreachTracker(window=window, **options)


def test_fires_when_over_for_the_whole_window() -> None:
    t = tracker()
    assert t.feed("a", 100.0, 90.0, 1.0) is None  # run starts
    assert t.feed("a", 101.0, 90.0, 1.0) is None
    breach = t.feed("a", 102.0, 95.0, 1.0)
    assert breach is not None
    assert (breach.container_id, breach.metric, breach.since, breach.at) == ("a", "cpu", 100, 102)
    assert (breach.cpu_percent, breach.memory_percent, breach.value) == (95.0, 1.0, 95.0)
    assert (breach.threshold, breach.window) == (50.0, 2.0)


def test_a_sample_under_the_threshold_restarts_the_window() -> None:
    t = tracker()
    t.feed("a", 100.0, 90.0, None)
    t.feed("a", 101.0, 90.0, None)
    assert t.feed("a", 102.0, 50.0, None) is None  # at the threshold is not over it
    assert t.feed("a", 103.0, 90.0, None) is None
    assert t.feed("a", 104.0, 90.0, None) is None
    assert t.feed("a", 105.0, 90.0, None) is not None


def test_unknown_values_neither_extend_nor_break_a_run() -> None:
    t = tracker()
    t.feed("a", 100.0, 90.0, 1.0)
    assert t.feed("a", 101.0, None, 1.0) is None
    breach = t.feed("a", 102.0, 90.0, 1.0)
    assert breach is not None
    assert breach.since == 100.0


def test_a_hole_longer_than_max_gap_restarts_the_window() -> None:
    t = tracker(max_gap=1.5)
    t.feed("a", 100.0, 90.0, None)
    assert t.feed("a", 102.0, 90.0, None) is None  # 2 s hole: not observed continuously
    assert t.over_since("a") == {"cpu": 102.0}
    assert t.feed("a", 103.0, 90.0, None) is None
    assert t.feed("a", 104.0, 90.0, None) is not None


def test_after_firing_the_container_starts_afresh() -> None:
    t = tracker()
    for at in (100.0, 101.0):
        t.feed("a", at, 90.0, None)
    assert t.feed("a", 102.0, 90.0, None) is not None
    assert t.over_since("a") == {}
    assert t.feed("a", 103.0, 90.0, None) is None
    assert t.feed("a", 104.0, 90.0, None) is None
    assert t.feed("a", 105.0, 90.0, None) is not None


def test_memory_breach_and_per_container_runs() -> None:
    t = tracker()
    t.feed("a", 100.0, 1.0, 90.0)
    t.feed("b", 100.5, 1.0, 90.0)
    t.feed("a", 101.0, 1.0, 90.0)
    t.forget("b")
    assert t.feed("b", 101.5, 1.0, 90.0) is None
    breach = t.feed("a", 102.0, 1.0, 90.0)
    assert breach is not None
    assert (breach.container_id, breach.metric, breach.threshold) == ("a", "memory", 80.0)
    assert t.over_since("b") == {"memory": 101.5}


def test_metrics_have_their_own_runs_and_the_longest_explains() -> None:
    t = tracker()
    t.feed("a", 100.0, 90.0, 1.0)  # cpu over from 100
    t.feed("a", 101.0, 90.0, 90.0)  # memory over from 101
    t.feed("a", 102.0, 1.0, 90.0)  # cpu run ends
    assert t.feed("a", 103.0, 90.0, 90.0) is not None  # memory: 101..103
    t.feed("a", 110.0, 90.0, 90.0)
    t.feed("a", 111.0, 90.0, 90.0)
    breach = t.feed("a", 112.0, 90.0, 90.0)
    assert breach is not None
    assert breach.metric == "cpu"  # both 110..112: CPU first


def test_unwatched_metric_and_zero_window() -> None:
    t = tracker(window=0.0, cpu_percent=None)
    assert t.feed("a", 100.0, 1000.0, 10.0) is None
    breach = t.feed("a", 101.0, 1000.0, 81.0)
    assert breach is not None
    assert breach.since == breach.at == 101.0


def test_duplicate_and_out_of_order_samples_are_ignored() -> None:
    t = tracker()
    t.feed("a", 100.0, 90.0, None)
    assert t.feed("a", 100.0, 1.0, None) is None
    assert t.feed("a", 99.0, 1.0, None) is None
    t.feed("a", 101.0, 90.0, None)
    assert t.feed("a", 102.0, 90.0, None) is not None


def test_bad_tracker_settings() -> None:
    with pytest.raises(ValueError):
        BreachTracker(cpu_percent=1, memory_percent=None, window=-1)
    with pytest.raises(ValueError):
        BreachTracker(cpu_percent=1, memory_percent=None, window=1, max_gap=0)


# -- victim -----------------------------------------------------------------------------------


def test_victim_is_the_most_recently_started_running_container() -> None:
    order = ["old", "hog", "new"]
    assert choose_victim(order, {"old", "hog", "new"}, set()) == "new"
    assert choose_victim(order, {"old", "hog"}, set()) == "hog"
    assert choose_victim(order, {"old", "hog", "new"}, {"new"}) == "hog"
    assert choose_victim(order, {"old"}, {"old"}) is None
    assert choose_victim([], {"x"}, set()) is None
