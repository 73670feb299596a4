"""Run protocols, the Appendix A.2 construction and analysis, and counterfactual edits."""

from __future__ import annotations

import numpy as np
import pytest

from simflib import curriculum as C


def test_few_shot_protocol_shape_epochs_and_seed():
    c = C.few_shot(seed=0)
    assert c.shape == (64, 4)
    epochs = c.reshape(4, 64)
    subset = set(epochs[0].tolist())
    assert len(subset) == 64 and subset <= set(range(100))
    for e in epochs:
        assert sorted(e.tolist()) == sorted(subset)  # each epoch is a permutation of the same 64 examples
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled
    np.testing.assert_array_equal(C.few_shot(seed=0), c)
    assert not np.array_equal(C.few_shot(seed=1), c)


def test_many_shot_fractional_epoch():
    c = C.many_shot(seed=0)
    assert c.shape == (384, 4)
    first, half = c[:256].ravel(), c[256:].ravel()
    assert len(set(first.tolist())) == 1024 and set(half.tolist()) <= set(first.tolist()) and len(set(half.tolist())) == 512


def test_short_epochs_pad_without_straddling():
    c = C.sample_curriculum(10, subset_size=6, epochs=2, batch_size=4, seed=0)
    assert c.shape == (4, 4)
    assert c[1, 2:].tolist() == [-1, -1] and c[3, 2:].tolist() == [-1, -1]


def test_protocol_runs_are_independent_of_count():
    a = C.protocol(3, seed=5, n_train=100, subset_size=64, epochs=4, batch_size=4)
    b = C.protocol(5, seed=5, n_train=100, subset_size=64, epochs=4, batch_size=4)
    np.testing.assert_array_equal(a, b[:3])
    assert a.shape == (3, 64, 4)


@pytest.mark.parametrize("n,b", [(10, 4), (12, 2), (9, 2), (6, 1)])
def test_minimal_identifiable_is_q_twice_with_full_rank(n, b):
    curr = C.minimal_identifiable(n, b)
    assert curr.shape == (2 * n, b)
    q = C.batching_matrix_of(curr[:n], n)
    assert (q.sum(axis=1) == b).all() and np.linalg.matrix_rank(q) == n
    u = np.ones((b + 1, b + 1)) - np.eye(b + 1)
    np.testing.assert_array_equal(q[: b + 1, : b + 1], u)
    losses = np.random.default_rng(0).uniform(0.5, 1.0, 2 * n)
    report = C.identifiability(curr, losses, n)
    assert report.unique and report.enough_steps and report.seen_twice and report.loss_moves
    assert report.unidentified.size == 0


def test_identifiability_conditions():
    curr = C.minimal_identifiable(10, 4)
    rng = np.random.default_rng(0)
    half = C.identifiability(curr[:10], rng.uniform(0.5, 1, 10), 10)
    assert not half.enough_steps and half.rank == 10 and not half.unique and half.unidentified.size == 10
    flat = C.identifiability(curr, np.ones(20), 10)  # condition 3: a loss that never moves
    assert not flat.loss_moves and flat.rank == 10 and flat.unidentified.tolist() == list(range(10))
    # An example never seen is the only unidentified one when the rest is well covered.
    big = np.concatenate([C.minimal_identifiable(10, 4)] * 2)
    big = np.where(big == 9, 10, big)
    rep = C.identifiability(big, rng.uniform(0.5, 1, 40), 11)
    assert 9 in rep.unidentified.tolist() and rep.counts[9] == 0


def test_minimal_identifiable_rejects_bad_sizes():
    with pytest.raises(ValueError, match="multiple of batch_size"):
        C.minimal_identifiable(11, 4)


def test_runs_needed():
    assert C.runs_needed(100, 64) == {2: 4, 20: 32, 60: 94}
    assert C.runs_needed(1536, 384, multiples=[2]) == {2: 8}


def test_remove_repacks_or_keeps_steps():
    c = np.array([[0, 1], [2, 3], [1, 4]])
    np.testing.assert_array_equal(C.remove(c, [1]), [[0, 2], [3, 4]])
    np.testing.assert_array_equal(C.remove(c, [1], repack=False), [[0, -1], [2, 3], [-1, 4]])


def test_order_groups_and_swap_steps():
    c = np.array([[0, 1], [2, 3], [4, 5]])
    np.testing.assert_array_equal(C.order_groups(c, [[4, 5], [0]]), [[4, 5], [0, 1], [2, 3]])
    np.testing.assert_array_equal(C.swap_steps(c, 1, 3), [[4, 5], [2, 3], [0, 1]])
    with pytest.raises(ValueError, match=r"steps are numbered 1..3"):
        C.swap_steps(c, 0, 2)


def test_duplicate():
    c = np.array([[0, 1], [2, 1]])
    np.testing.assert_array_equal(C.duplicate(c, 1, 3), [[0, 1], [1, 1], [2, 1], [1, 1]])
    d = C.duplicate(c, 2, 10, seed=0)
    assert (d == 2).sum() == 10 and d.shape == (7, 2) and sorted(d[d != 2].tolist()) == [-1, 0, 1, 1]
    with pytest.raises(ValueError, match="does not occur"):
        C.duplicate(c, 7, 2)
