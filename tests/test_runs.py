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
    from simflib.simulators.base import observations

    obs = observations(rs)
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
    with pytest.raises(ValueError, match=r"runs.npz: damaged or truncated"):
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
    with pytest.raises(ValueError, match="evil.npz: member 'header.npy' has dtype object"):
        RunSet.load(path)


def test_wrong_format_and_version(tmp_path: Path):
    path = tmp_path / "other.npz"
    np.savez(path, header=np.frombuffer(json.dumps({"format": "x"}).encode(), np.uint8))
    with pytest.raises(ValueError, match="not a simflib.runset file"):
        RunSet.load(path)
    np.savez(path, header=np.frombuffer(json.dumps({"format": "simflib.runset", "version": 99}).encode(), np.uint8))
    with pytest.raises(ValueError, match="version 99"):
        RunSet.load(path)
    with pytest.raises(ValueError, match="missing.npz: no such file"):
        RunSet.load(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="text.npz: truncated or not"):
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


def test_edited_header_is_detected(tmp_path: Path):
    """Finding: the checksum did not cover the header, so a changed n_train loaded silently."""
    from simflib.storage import read_archive

    path = _runs().save(tmp_path / "runs.npz")
    header, arrays = read_archive(path, fmt="simflib.runset", versions=(2,))
    header["n_train"] = 11  # a plausible edit: every index is still in range
    np.savez(path, **arrays, header=np.frombuffer(json.dumps(header).encode(), np.uint8))
    with pytest.raises(ValueError, match="runs.npz: contents do not match the recorded sha256"):
        RunSet.load(path)


def test_every_single_byte_flip_raises_a_value_error_naming_the_file(tmp_path: Path):
    """Finding: bit flips raised zlib.error or RuntimeError instead of the documented ValueError."""
    path = _runs().save(tmp_path / "runs.npz")
    data = path.read_bytes()
    flipped = tmp_path / "flipped.npz"
    for position in range(0, len(data), 7):
        damaged = bytearray(data)
        damaged[position] ^= 0x10
        flipped.write_bytes(bytes(damaged))
        try:
            RunSet.load(flipped)
        except ValueError as err:
            assert "flipped.npz" in str(err)
        # A flip in bytes no reader looks at (zip comments, padding) may load: then it must load the same data.
        else:
            back = RunSet.load(flipped)
            np.testing.assert_array_equal(back[0].losses, _runs()[0].losses)


def test_a_zip_bomb_is_refused_before_it_is_decompressed(tmp_path: Path):
    """Finding: a crafted 1 MB .npz expanded to gigabytes on load. Sizes are now checked before decompressing."""
    import tracemalloc

    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("losses.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f8", "fortran_order": False, "shape": (2**23, 8)})
            zeros = bytes(1 << 20)
            for _ in range(512):  # 512 MiB of zeros, about 0.5 MB compressed
                member.write(zeros)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    with pytest.raises(ValueError, match="bomb.npz: member 'losses.npy' declares .* refusing to decompress"):
        RunSet.load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 << 20


def test_a_member_whose_npy_header_lies_about_its_size_is_refused(tmp_path: Path):
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as z:
        with z.open("losses.npy", "w") as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
            member.write(bytes(64))
    with pytest.raises(ValueError, match="liar.npz: member 'losses.npy' declares shape"):
        RunSet.load(path)


def test_version_1_files_still_load():
    committed = sorted((Path(__file__).parent.parent / "data" / "runs" / "boolq-minilm-ia3").glob("run-0000[0-2].npz"))
    if not committed:
        pytest.skip("no committed runs")
    for path in committed:
        run_set = RunSet.load(path)
        assert run_set.meta["run_index"] == int(path.stem.split("-")[1]) and run_set[0].metrics == {}


def test_run_arrays_are_copied_and_read_only():
    """Finding: mutating the caller's array after construction changed the run."""
    curriculum, losses = np.array([[0, 1], [2, -1]]), np.ones((3, 2))
    run = Run(curriculum, losses, {"lr": np.ones(2)}, metrics={"accuracy": np.zeros((3, 2))})
    curriculum[0, 0], losses[1, 1] = 3, 7.0
    assert run.curriculum[0, 0] == 0 and run.losses[1, 1] == 1.0
    for arr in (run.curriculum, run.losses, run.extras["lr"], run.metrics["accuracy"]):
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 0


def test_metric_trajectories_round_trip_and_are_checked(tmp_path: Path):
    rng = np.random.default_rng(3)
    runs = RunSet([Run(rng.integers(0, 4, (3, 2)), rng.uniform(size=(4, 2)), metrics={"accuracy": rng.integers(0, 2, (4, 2))})
                   for _ in range(2)], 4)
    back = RunSet.load(runs.save(tmp_path / "m.npz"))
    np.testing.assert_array_equal(back[1].trajectory("accuracy"), runs[1].metrics["accuracy"])
    assert back[0].trajectory() is back[0].losses
    with pytest.raises(ValueError, match="no metric 'bleu'; it has: loss, accuracy"):
        back[0].trajectory("bleu")
    with pytest.raises(ValueError, match=r"run: metric 'rouge' must have the losses' shape \(T \+ 1, m\) = \(4, 2\)"):
        Run(np.zeros((3, 1), int), np.ones((4, 2)), metrics={"rouge": np.ones((3, 2))})
    with pytest.raises(ValueError, match="metric 'f1': non-finite"):
        Run(np.zeros((3, 1), int), np.ones((4, 2)), metrics={"f1": np.full((4, 2), np.nan)})
    with pytest.raises(ValueError, match="run 1 has metrics"):
        RunSet([runs[0], Run(np.zeros((3, 1), int), np.ones((4, 2)))], 4).save(tmp_path / "x.npz")


def test_generations_round_trip_select_with_their_columns_and_are_checked(tmp_path: Path):
    rng = np.random.default_rng(4)
    runs = RunSet([Run(rng.integers(0, 4, (3, 2)), rng.uniform(size=(4, 3)), generations=rng.integers(-1, 50, (4, 3, g)))
                   for g in (2, 5)], 4, meta={"test_ids": ["a", "b", "c"]})
    back = RunSet.load(runs.save(tmp_path / "g.npz"))
    np.testing.assert_array_equal(back[0].generations[..., :2], runs[0].generations)
    assert (back[0].generations[..., 2:] == -1).all()  # padded to the widest run's token limit
    np.testing.assert_array_equal(back[1].generations, runs[1].generations)
    np.testing.assert_array_equal(back.select(tests=["c", "a"])[1].generations, runs[1].generations[:, [2, 0]])
    with pytest.raises(ValueError, match=r"generations must be integer token ids of shape \(T \+ 1, m, G\)"):
        Run(np.zeros((3, 1), int), np.ones((4, 2)), generations=np.zeros((4, 3, 2), int))
    with pytest.raises(ValueError, match="token ids outside"):
        Run(np.zeros((3, 1), int), np.ones((4, 2)), generations=np.full((4, 2, 2), -2))
    with pytest.raises(ValueError, match="run 1 lacks generations"):
        RunSet([runs[0], Run(np.zeros((3, 1), int), np.ones((4, 3)))], 4).save(tmp_path / "x.npz")
    # A header that promises generations the file lacks is refused (the checksum is recomputed, so only the
    # promise is wrong).
    header, arrays = runs_module.read_archive(tmp_path / "g.npz", fmt=runs_module.FORMAT, versions=runs_module.READABLE)
    del arrays["generations"]
    runs_module.write_archive(tmp_path / "lie.npz", arrays, {k: v for k, v in header.items() if k not in ("covers", "sha256")})
    with pytest.raises(ValueError, match="promises generations"):
        RunSet.load(tmp_path / "lie.npz")


def test_on_metric_puts_a_metric_in_place_of_the_losses():
    rng = np.random.default_rng(5)
    runs = RunSet([Run(rng.integers(0, 4, (3, 2)), rng.uniform(size=(4, 2)), metrics={"f1": rng.uniform(size=(4, 2))})
                   for _ in range(3)], 4, meta={"runs": [{"run_index": k} for k in range(3)]})
    view = runs.on_metric("f1")
    assert runs.metric_names() == ["loss", "f1"] and view.meta["metric"] == "f1"
    np.testing.assert_array_equal(view[2].losses, runs[2].metrics["f1"])
    assert runs.on_metric("loss") is runs
    with pytest.raises(ValueError, match=r"run 1 \(position 0\) has no metric 'bleu'"):
        runs[[1, 2]].on_metric("bleu")


def _folder(tmp_path: Path, k: int = 3) -> Path:
    """A collected-style folder: config.json with a matching fingerprint, and one single-run file per index."""
    from simflib.storage import fingerprint

    folder = tmp_path / "setting"
    folder.mkdir()
    config = {"task": "toy", "n_pool": 10, "n_runs": k}
    (folder / "config.json").write_text(json.dumps({"config": config, "fingerprint": fingerprint(config)}))
    for index in range(k):
        one = _runs(k=1, seed=index)
        RunSet(list(one), 10, meta={"run_index": index, "fingerprint": fingerprint(config)}).save(
            folder / f"run-{index:05d}.npz")
    return folder


def test_a_run_file_under_another_runs_name_is_refused(tmp_path: Path):
    """Finding: a stray or duplicated run file loaded as an extra run; the index inside was not checked."""
    import shutil

    folder = _folder(tmp_path)
    assert RunSet.load(folder).run_indices() == [0, 1, 2]
    shutil.copy(folder / "run-00001.npz", folder / "run-00005.npz")
    with pytest.raises(ValueError, match="run-00005.npz: holds run 1, not run 5"):
        RunSet.load(folder)
    (folder / "run-00005.npz").unlink()
    shutil.copy(folder / "run-00001.npz", folder / "run-00001 (copy).npz")
    with pytest.raises(ValueError, match=r"run-00001 \(copy\).npz: not a run file name"):
        RunSet.load(folder)


def test_a_hand_edited_config_is_refused_and_missing_runs_are_named(tmp_path: Path):
    folder = _folder(tmp_path)
    (folder / "run-00001.npz").unlink()
    assert RunSet.load_folder(folder).run_indices() == [0, 2]  # indices, not positions, name the runs
    with pytest.raises(ValueError, match="n_runs=2 asks for runs that are not there: run-00001.npz"):
        RunSet.load_folder(folder, n_runs=2)
    info = json.loads((folder / "config.json").read_text())
    info["config"]["task"] = "other"
    (folder / "config.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="config.json: the configuration does not match its fingerprint"):
        RunSet.load_folder(folder)


def test_split_parts_know_the_run_index_of_each_of_their_runs(tmp_path: Path):
    folder = _folder(tmp_path, k=6)
    (folder / "run-00002.npz").unlink()  # indices 0, 1, 3, 4, 5: positions and indices differ
    runs = RunSet.load_folder(folder)
    fit, val, test = runs.split(seed=0, sizes=(2, 1, 2))
    for part in (fit, val, test):
        assert part.run_indices() == [runs.run_indices()[i] for i in part.meta["run_indices"]]
        assert all(r is runs[i] for r, i in zip(part, part.meta["run_indices"]))


def test_select_tests_keeps_columns_metrics_ids_and_refuses_unknown_ids():
    rng = np.random.default_rng(0)
    runs = [
        Run(rng.integers(0, 5, (4, 2)), rng.random((5, 3)) + 1, metrics={"accuracy": rng.random((5, 3))})
        for _ in range(2)
    ]
    rs = RunSet(runs, 5, meta={"test_ids": ["a", "b", "c"], "task": "x"})
    part = rs.select(tests=["c", "a"])
    assert part.test_ids() == ["c", "a"] and part.meta["task"] == "x" and len(part) == 2
    for new, old in zip(part, rs):
        np.testing.assert_array_equal(new.losses, old.losses[:, [2, 0]])
        np.testing.assert_array_equal(new.metrics["accuracy"], old.metrics["accuracy"][:, [2, 0]])
        np.testing.assert_array_equal(new.curriculum, old.curriculum)
    assert rs.test_ids() == ["a", "b", "c"]  # the original is untouched
    with pytest.raises(ValueError, match=r"\['z'\] are not in this run set"):
        rs.select(tests=["a", "z"])
    with pytest.raises(ValueError, match="twice"):
        rs.select(tests=["a", "a"])
    with pytest.raises(ValueError, match="no test examples"):
        rs.select(tests=[])
    plain = RunSet(runs, 5)  # without ids, columns are addressed by position
    assert plain.select(tests=np.array([1])).test_ids() == [1]
