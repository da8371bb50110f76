"""The memory budget without a server: cgroup v1 and v2 files laid out in a folder, the reserve, admission."""

from __future__ import annotations

import json
import os

import pytest

from dogbreed.serving.cache import ModelCache
from dogbreed.serving.errors import InferenceError
from dogbreed.serving.memory import (
    UNLIMITED,
    Budget,
    Ledger,
    LoadCost,
    MiB,
    Reading,
    jvm_sizes,
    process_rss,
    process_tree_rss,
    read_memory,
    reserve_for,
)


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _proc(root, cgroup_lines, meminfo_mb=16384):
    _write(root / "proc/self/cgroup", "\n".join(cgroup_lines) + "\n")
    _write(root / "proc/meminfo", f"MemTotal:       {meminfo_mb * 1024} kB\nMemFree:  1 kB\n")


@pytest.fixture
def no_override(monkeypatch):
    monkeypatch.delenv("DOGBREED_MEMORY_LIMIT_MB", raising=False)
    return monkeypatch


def test_cgroup_v2_limit_and_working_set(tmp_path, no_override):
    _proc(tmp_path, ["0::/"])
    group = tmp_path / "sys/fs/cgroup"
    _write(group / "cgroup.controllers", "cpu memory\n")
    _write(group / "memory.max", f"{768 * MiB}\n")
    _write(group / "memory.current", f"{300 * MiB}\n")
    _write(group / "memory.stat", f"anon {200 * MiB}\nfile {100 * MiB}\ninactive_file {40 * MiB}\n")
    assert read_memory(tmp_path) == Reading(768 * MiB, 260 * MiB, "cgroup v2")


def test_cgroup_v2_nested_path_takes_the_smallest_limit_on_the_way_up(tmp_path, no_override):
    _proc(tmp_path, ["0::/system.slice/server.service"])
    group = tmp_path / "sys/fs/cgroup"
    _write(group / "cgroup.controllers", "memory\n")
    _write(group / "system.slice/memory.max", f"{512 * MiB}\n")
    _write(group / "system.slice/server.service/memory.max", "max\n")
    _write(group / "system.slice/server.service/memory.current", f"{100 * MiB}\n")
    reading = read_memory(tmp_path)
    assert reading.limit == 512 * MiB and reading.used == 100 * MiB


def test_cgroup_v1_limit_with_total_inactive_file(tmp_path, no_override):
    _proc(tmp_path, ["4:memory:/docker/abc", "3:cpu,cpuacct:/docker/abc"])
    group = tmp_path / "sys/fs/cgroup/memory"  # a container sees its own cgroup at the mount's root
    _write(group / "memory.limit_in_bytes", f"{1024 * MiB}\n")
    _write(group / "memory.usage_in_bytes", f"{500 * MiB}\n")
    _write(group / "memory.stat", f"inactive_file {10 * MiB}\ntotal_inactive_file {50 * MiB}\n")
    assert read_memory(tmp_path) == Reading(1024 * MiB, 450 * MiB, "cgroup v1")


def test_no_limit_anywhere_falls_back_to_the_host_and_the_server_process_tree(tmp_path, no_override):
    _proc(tmp_path, ["4:memory:/"], meminfo_mb=2048)
    _write(tmp_path / "sys/fs/cgroup/memory/memory.limit_in_bytes", f"{UNLIMITED * 8}\n")
    server = tmp_path / "proc/4242"
    _write(server / "stat", "4242 (python) S 1 4242")
    _write(server / "statm", "100 10 0 0 0 0 0\n")
    _write(tmp_path / "proc/4243/stat", "4243 (java (x)) S 4242 4242")
    _write(tmp_path / "proc/4243/statm", "100 30 0 0 0 0 0\n")
    _write(tmp_path / "proc/99/stat", "99 (other) S 1 99")
    _write(tmp_path / "proc/99/statm", "100 1000 0 0 0 0 0\n")
    reading = read_memory(tmp_path, server_pid=4242)
    assert reading == Reading(2048 * MiB, 40 * os.sysconf("SC_PAGE_SIZE"), "host")


def test_the_environment_overrides_the_limit_but_not_the_reading_of_use(tmp_path, no_override):
    _proc(tmp_path, ["0::/"])
    group = tmp_path / "sys/fs/cgroup"
    _write(group / "cgroup.controllers", "memory\n")
    _write(group / "memory.max", f"{4096 * MiB}\n")
    _write(group / "memory.current", f"{300 * MiB}\n")
    no_override.setenv("DOGBREED_MEMORY_LIMIT_MB", "900")
    assert read_memory(tmp_path) == Reading(900 * MiB, 300 * MiB, "DOGBREED_MEMORY_LIMIT_MB")
    no_override.setenv("DOGBREED_MEMORY_LIMIT_MB", "lots")  # not a number: ignored
    assert read_memory(tmp_path).limit == 4096 * MiB


def test_this_machine_reads_something_sensible():
    reading = read_memory()
    assert 0 < reading.used < reading.limit
    assert process_tree_rss(os.getpid()) >= process_rss() > 10 * MiB


def test_the_reserve_and_the_jvm_follow_the_limit_and_the_request_size():
    small, large = jvm_sizes(768 * MiB, 6 * MiB), jvm_sizes(64 * 1024 * MiB, 6 * MiB)
    assert (small.heap, small.direct, small.queued) == (56 * MiB, 32 * MiB, 24 * MiB)  # 32 + four 6 MiB bodies
    assert (large.heap, large.direct) == (536 * MiB, 32 * MiB)
    assert "-Xmx56m" in small.vmargs() and "-XX:MaxDirectMemorySize=32m" in small.vmargs()
    assert "ExitOnOutOfMemoryError" not in small.vmargs()
    one, two = reserve_for(small, 1, 8_000_000), reserve_for(small, 2, 8_000_000)
    assert two.total - one.total == one.workers + one.requests  # each worker: its interpreter and a request
    assert one.jvm == small.heap + small.direct + 96 * MiB and one.launcher == two.launcher
    assert reserve_for(small, 1, 1).requests == (32 + 64) * MiB  # a small image: the activations bound it


def _ledger(models_mb, limit_mb, used_mb, headroom_mb=0):
    used = [used_mb * MiB]
    ledger = Ledger(Budget(models_mb * MiB, limit_mb * MiB, headroom_mb * MiB), lambda: Reading(limit_mb, used[0], "t"))
    return ledger, used


def test_admission_counts_both_the_books_and_the_real_use():
    ledger, used = _ledger(models_mb=100, limit_mb=1000, used_mb=200, headroom_mb=300)
    cost = LoadCost(steady=30 * MiB, peak=60 * MiB)
    assert ledger.shortfall(cost) == 0
    ledger.record("a", 50 * MiB)
    ledger.record("b", 30 * MiB)
    assert ledger.shortfall(cost) == 10 * MiB  # the books: 80 + 30 > 100
    ledger.release("b")
    assert ledger.shortfall(cost) == 0
    used[0] = 680 * MiB  # memory freed but never returned, or grown elsewhere: the real check refuses
    assert ledger.shortfall(cost) == 40 * MiB  # 680 + 60 > 1000 - 300
    assert not ledger.fits_alone(LoadCost(101 * MiB, 0)) and ledger.fits_alone(LoadCost(100 * MiB, 0))


class FakeModel:
    def __init__(self, name, size):
        self.name = name
        self.weights = b"w" * size  # written, so resident


def _loader(name, cost_mb, real_mb=None):
    def load(admit):
        admit(LoadCost(cost_mb * MiB, cost_mb * MiB))
        return FakeModel(name, (real_mb if real_mb is not None else cost_mb) * MiB)

    return load


def test_routing_cache_evicts_least_recently_used_until_the_new_model_fits():
    ledger, _ = _ledger(models_mb=100, limit_mb=10_000, used_mb=0)
    cache = ModelCache(ledger)
    for name in ("a", "b", "c"):
        cache.get_or_load(name, _loader(name, 30))
    assert cache.keys() == ["a", "b", "c"]
    assert 25 * MiB < ledger.costs["a"] < 40 * MiB  # charged what it really took, not the estimate
    cache.get("a")  # a is now the most recently used
    cache.get_or_load("d", _loader("d", 30))
    assert cache.keys() == ["c", "a", "d"]  # b went first
    cache.get_or_load("e", _loader("e", 60))
    assert cache.keys() == ["d", "e"]  # two had to go
    with pytest.raises(InferenceError) as refused:
        cache.get_or_load("huge", _loader("huge", 101))
    assert refused.value.status == 507 and refused.value.code == "InsufficientMemory"
    assert cache.keys() == ["d", "e"]  # a model that can never fit unloads nothing


def test_multi_model_cache_never_evicts_and_answers_507(caplog):
    ledger, _ = _ledger(models_mb=100, limit_mb=10_000, used_mb=0)
    cache = ModelCache(ledger, evict=False)
    for name in ("a", "b", "c"):
        cache.get_or_load(name, _loader(name, 30))
    with pytest.raises(InferenceError) as refused:
        cache.get_or_load("d", _loader("d", 30))
    answer = json.loads(refused.value.body())
    assert answer["code"] == 507 and answer["type"] == "InsufficientMemory" and "unload a model" in answer["message"]
    assert "loaded: ['a', 'b', 'c']" in caplog.text  # the operator's log says what holds the memory
    assert cache.keys() == ["a", "b", "c"]
    assert cache.drop("b") and not cache.drop("b")
    cache.get_or_load("d", _loader("d", 30))  # the unloaded model's room is free again
    assert cache.keys() == ["a", "c", "d"]
