"""The pieces of data-parallel training that need no second process: shards, the failure file, one-process
defaults. tests/integration/test_distributed.py runs torchrun itself."""

from __future__ import annotations

from collections import Counter

import pytest
from torch.utils.data import DistributedSampler

from dogbreed import sagemaker_env
from dogbreed.training.data import SeededEpochOrder
from dogbreed.training.distributed import Group, from_environment


def test_two_shards_split_the_epoch_like_distributed_sampler_with_one_seed_per_position():
    whole = list(SeededEpochOrder(10, seed=7))
    shards = [SeededEpochOrder(10, seed=7, num_replicas=2, rank=r) for r in (0, 1)]
    for shard in shards:
        shard.set_epoch(1)
    keys = [list(shard) for shard in shards]
    assert [len(k) for k in keys] == [5, 5]
    # torch's DistributedSampler decides which indices each rank gets ...
    for rank in (0, 1):
        reference = DistributedSampler(range(10), num_replicas=2, rank=rank, shuffle=True, seed=7)
        reference.set_epoch(1)
        assert [index for index, _ in keys[rank]] == list(reference)
    # ... every image once per epoch, and each position of the permutation keeps the seed it has in one process.
    assert Counter(index for k in keys for index, _ in k) == Counter(range(10))
    interleaved = [key for pair in zip(*keys, strict=True) for key in pair]
    assert interleaved == whole


def test_an_odd_count_is_padded_so_every_rank_takes_as_many_steps():
    shards = [list(SeededEpochOrder(11, seed=0, num_replicas=2, rank=r)) for r in (0, 1)]
    assert [len(s) for s in shards] == [6, 6]
    assert {index for s in shards for index, _ in s} == set(range(11))


def test_a_resumed_shard_skips_what_it_already_trained_on():
    order = SeededEpochOrder(12, seed=3, num_replicas=2, rank=1)
    order.set_epoch(2)
    full = list(order)
    order.set_epoch(2, start=4)
    assert len(order) == 2 and list(order) == full[4:]
    order.set_epoch(3)
    assert list(order) != full  # a new permutation each epoch


def test_without_torchrun_the_job_is_one_process_and_the_collectives_pass_values_through(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    group = from_environment()
    assert group == Group() and not group.active and group.is_main
    assert group.describe() == "world_size=1 rank=0 local_rank=0 backend=none"
    assert group.stop_signal(None) is None and group.stop_signal(15) == 15
    assert group.sum(1.5, 2) == [1.5, 2] and group.from_main({"a": 1}) == {"a": 1}


def test_torchrun_variables_name_the_process(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    group = from_environment()
    assert (group.world_size, group.rank, group.local_rank, group.is_main) == (4, 3, 1, False)


@pytest.fixture
def sagemaker_tree(tmp_path, monkeypatch):
    monkeypatch.setenv("SM_OUTPUT_DIR", str(tmp_path / "output"))
    return tmp_path / "output" / "failure"


def test_the_first_failing_rank_keeps_its_reason_in_the_failure_file(sagemaker_tree):
    sagemaker_env.write_failure("rank 1: CUDA out of memory", first_only=True)
    sagemaker_env.write_failure("rank 0: Connection closed by peer", first_only=True)
    assert sagemaker_tree.read_text() == "rank 1: CUDA out of memory\n"
    sagemaker_env.write_failure("a single process says what it says")
    assert sagemaker_tree.read_text() == "a single process says what it says\n"
