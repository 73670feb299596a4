"""Run and RunSet: validation that names the place, a safe file format, the paper's split."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from simflib import Run, RunSet
from simflib import runs as runs_module


def _runs(k=4, T=5, m=3, n=10, seed=0) -> RunSet:
    rng = np.random.default_rng(seed)
    return RunSet(
        [
            Run(rng.integers(0, n, (T, 2)), rng.uniform(0, 1, (T + 1, m)), {"train_loss": rng.uniform(size=T)})
            for _ in range(k)
        ],
        n,
        meta={"task": "toy", "seeds": [1, 2]},
    )


def test_run_shape_and_value_errors_name_the_place():
    with pytest.raises(ValueError, match=r"T \+ 1 = 4 rows"):
        Run(np.zeros((3, 2), int), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="losses: non-finite value inf at step 2, test example 1"):
        losses = np.zeros((4, 2))
        losses[2, 1] = np.inf
        Run(np.zeros((3, 2), int), losses)
    with pytest.raises(ValueError, match="integer"):
        Run(np.array([[0.5, 1.0]]), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="index -2 at step 1"):
        Run(np.array([[-2, 1]]), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="expected integer"):
        Run(np.array([["a"]]), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="extra 'lr' must have leading dimension T=1"):
        Run([[0]], np.zeros((2, 1)), {"lr": np.zeros(3)})


def test_runset_errors_name_the_run():
    good = Run([[0, 1]], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="run 1 has m=2 test examples but run 0 has m=3"):
        RunSet([good, Run([[0, 1]], np.zeros((2, 2)))], 5)
    with pytest.raises(ValueError, match=r"run 1: curriculum: index 7 .* n_train=5"):
        RunSet([good, Run([[0, 7]], np.zeros((2, 3)))], 5)
    with pytest.raises(ValueError, match="no runs"):
        RunSet([], 5)
    with pytest.raises(ValueError, match="meta must be JSON"):
        RunSet([good], 5, meta={"x": object()})
    with pytest.raises(TypeError, match="run 1 is a ndarray, not a simflib.Run"):
        RunSet([good, np.zeros((2, 3))], 5)


def test_sequence_protocol():
    rs = _runs()
    assert len(rs) == 4 and isinstance(rs[1], Run) and isinstance(rs[1:3], RunSet) and len(rs[1:3]) == 2
    assert [r.n_steps for r in rs] == [5] * 4
    assert rs[[3, 0]][0] is rs[3]
    obs = rs.observations()
    assert obs.n_steps == 20 and obs.m == 3
    np.testing.assert_array_equal(obs.loss_after[5:10], rs[1].losses[1:])


def test_save_load_round_trip(tmp_path: Path):
    rs = _runs()
    rs = RunSet(list(rs) + [Run(np.zeros((2, 1), int), np.ones((3, 3)), {"train_loss": np.ones(2)})], 10, rs.meta)
    path = rs.save(tmp_path / "runs.npz")
    back = RunSet.load(path)
    assert back.n_train == 10 and back.meta == rs.meta and len(back) == 5
    for a, b in zip(rs, back):
        np.testing.assert_array_equal(a.curriculum, b.curriculum)
        np.testing.assert_array_equal(a.losses, b.losses)
        np.testing.assert_array_equal(a.extras["train_loss"], b.extras["train_loss"])
    assert back[4].curriculum.shape == (2, 1)  # per-run batch size survives padding in the file


def test_truncated_file_is_rejected(tmp_path: Path):
    path = _runs().save(tmp_path / "runs.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or not a simflib run-set file"):
        RunSet.load(path)


def test_tampered_values_are_detected(tmp_path: Path):
    path = _runs().save(tmp_path / "runs.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["losses"] = arrays["losses"].copy()
    arrays["losses"][3, 1] += 1e-9
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="sha256"):
        RunSet.load(path)


def test_pickled_objects_are_refused(tmp_path: Path):
    path = tmp_path / "evil.npz"
    np.savez(path, header=np.array([{"format": "simflib.runset"}], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        RunSet.load(path)


def test_wrong_format_and_version(tmp_path: Path):
    path = tmp_path / "other.npz"
    np.savez(path, header=np.frombuffer(json.dumps({"format": "x"}).encode(), np.uint8))
    with pytest.raises(ValueError, match="not a simflib run-set file"):
        RunSet.load(path)
    np.savez(path, header=np.frombuffer(json.dumps({"format": "simflib.runset", "version": 99}).encode(), np.uint8))
    with pytest.raises(ValueError, match="version 99"):
        RunSet.load(path)
    with pytest.raises(ValueError, match="no such run-set file"):
        RunSet.load(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="truncated or not"):
        RunSet.load(tmp_path / "text.npz")


def test_failed_save_leaves_previous_file_and_no_partial(tmp_path: Path, monkeypatch):
    path = _runs(seed=1).save(tmp_path / "runs.npz")
    before = path.read_bytes()

    def broken(f, **arrays):
        f.write(b"PK partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", broken)
    with pytest.raises(OSError, match="disk full"):
        _runs(seed=2).save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.npz"]
    with pytest.raises(OSError):
        _runs(seed=2).save(tmp_path / "new.npz")
    assert not (tmp_path / "new.npz").exists()


def test_save_is_a_plain_zip_of_numeric_arrays(tmp_path: Path):
    path = _runs().save(tmp_path / "runs.npz")
    with zipfile.ZipFile(path) as z:
        names = sorted(z.namelist())
    assert names == sorted(["header.npy", "steps.npy", "batch_sizes.npy", "curricula.npy", "losses.npy", "extra.train_loss.npy"])


def test_split_is_the_papers_20_2_10_and_seeded():
    rs = _runs(k=32)
    fit, val, test = rs.split(seed=0)
    assert (len(fit), len(val), len(test)) == runs_module.PAPER_SPLIT
    ids = fit.meta["run_indices"] + val.meta["run_indices"] + test.meta["run_indices"]
    assert sorted(ids) == list(range(32))
    assert rs.split(seed=0)[2].meta["run_indices"] == test.meta["run_indices"]
    assert rs.split(seed=1)[2].meta["run_indices"] != test.meta["run_indices"]
    assert test[0] is rs[test.meta["run_indices"][0]]
    with pytest.raises(ValueError, match="need 32 runs but the set has 10"):
        rs[:10].split(seed=0)


def test_selecting_runs_keeps_each_runs_provenance_with_it():
    rng = np.random.default_rng(0)
    runs = RunSet([Run(rng.integers(0, 4, (2, 1)), rng.uniform(size=(3, 2))) for _ in range(4)], 4,
                  meta={"runs": [{"run_index": k} for k in range(4)], "task": "x"})
    assert [r["run_index"] for r in runs[[3, 1]].meta["runs"]] == [3, 1]
    assert [r["run_index"] for r in runs[1:3].meta["runs"]] == [1, 2]
    assert runs[::2].meta["task"] == "x" and runs[::2][1] is runs[2]
