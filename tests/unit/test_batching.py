import numpy as np
import pytest

from transferkit.evaluation.evaluate import eval_batches
from transferkit.training.batching import epoch_batches, split_batch

LENGTHS = np.random.default_rng(0).integers(3, 120, size=1001).tolist()


@pytest.mark.parametrize("strategy", ["length_grouped", "random"])
@pytest.mark.parametrize("max_tokens", [None, 512])
def test_every_example_exactly_once_per_epoch(strategy, max_tokens):
    for epoch in range(3):
        batches = epoch_batches(LENGTHS, 32, seed=1, epoch=epoch, strategy=strategy, max_tokens=max_tokens)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(LENGTHS)))
        assert max(len(b) for b in batches) <= 32


def test_token_budget_respected():
    batches = epoch_batches(LENGTHS, 64, seed=1, epoch=0, max_tokens=400)
    for b in batches:
        padded = max(LENGTHS[i] for i in b) * len(b)
        assert padded <= 400 or len(b) == 1


def test_length_grouping_cuts_padding():
    def pad_fraction(batches):
        real = sum(LENGTHS[i] for b in batches for i in b)
        padded = sum(max(LENGTHS[i] for i in b) * len(b) for b in batches)
        return 1 - real / padded

    grouped = pad_fraction(epoch_batches(LENGTHS, 32, seed=1, epoch=0))
    shuffled = pad_fraction(epoch_batches(LENGTHS, 32, seed=1, epoch=0, strategy="random"))
    assert grouped < 0.05 < 0.3 < shuffled


def test_deterministic_per_epoch_and_varies_across_epochs():
    a = epoch_batches(LENGTHS, 32, seed=1, epoch=2)
    assert a == epoch_batches(LENGTHS, 32, seed=1, epoch=2)
    assert a != epoch_batches(LENGTHS, 32, seed=1, epoch=3)


def test_split_batch_partitions_global_batch():
    batch = list(range(7))
    parts = [split_batch(batch, r, 2) for r in range(2)]
    assert parts == [[0, 2, 4, 6], [1, 3, 5]]
    assert split_batch(batch, 0, 1) is batch
    # fewer examples than processes: every process still gets one
    assert [split_batch([5], r, 2) for r in range(2)] == [[5], [5]]


def test_eval_batches_disjoint_across_ranks():
    parts = [eval_batches(LENGTHS, 50, r, 3) for r in range(3)]
    flat = [i for p in parts for b in p for i in b]
    assert sorted(flat) == list(range(len(LENGTHS)))


def test_chunks_partition_batch_under_cap():
    from transferkit.training.batching import chunk_batch

    for batch in epoch_batches(LENGTHS, 32, seed=1, epoch=0):
        chunks = chunk_batch(batch, LENGTHS, 300)
        assert [i for c in chunks for i in c] == batch  # same examples, same order
        for c in chunks:
            assert max(LENGTHS[i] for i in c) * len(c) <= 300 or len(c) == 1
    assert chunk_batch([1, 2, 3], LENGTHS, None) == [[1, 2, 3]]
