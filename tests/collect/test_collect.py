"""Recording runs: determinism, resuming after a kill, refusing mixed folders, clear errors before training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from simflib.collect import CollectConfig, collect, load_collected

pytestmark = pytest.mark.slow  # trains or loads real models


def _config(model: str, **kw) -> CollectConfig:
    base = dict(task="piqa", model=model, method="ia3", n_runs=2, n_pool=12, subset_size=8, epochs=1,
                m=5, lr=0.05, max_length=24, checkpoints=3)
    return CollectConfig(**{**base, **kw})


def test_same_seed_same_trajectories_and_losses_move(tmp_path, tiny_bert):
    cfg = _config(tiny_bert)
    a = collect(cfg, tmp_path / "a", progress=False)
    b = collect(cfg, tmp_path / "b", progress=False)
    assert len(a) == 2 and a[0].losses.shape == (3, 5) and a[0].curriculum.shape == (2, 4)
    for ra, rb in zip(a, b):
        np.testing.assert_array_equal(ra.curriculum, rb.curriculum)
        np.testing.assert_allclose(ra.losses, rb.losses, rtol=0, atol=1e-6)
    np.testing.assert_allclose(a[0].losses[0], a[1].losses[0])  # every run starts from the same model
    assert np.abs(np.diff(a[0].losses, axis=0)).mean() > 1e-4
    assert a[0].extras["learning_rate"].tolist() == [0.05, 0.05]
    meta = a.meta
    assert meta["fingerprint"] == cfg.fingerprint() and len(meta["test_ids"]) == 5
    assert meta["command"].startswith("python -m simflib collect --out")


def test_checkpoints_hold_the_trainable_parameters(tmp_path, tiny_bert):
    from safetensors.numpy import load_file

    cfg = _config(tiny_bert, n_runs=1, subset_size=12, epochs=1)  # T = 3 steps, checkpoints at 0, 1, 2
    collect(cfg, tmp_path, progress=False)
    ckpt = load_file(str(tmp_path / "run-00000.ckpt.safetensors"))
    steps = sorted({k.split("/")[0] for k in ckpt})
    assert steps == ["step00000", "step00001", "step00002"]
    names = {k.split("/", 1)[1] for k in ckpt}
    assert any("ia3" in n for n in names) and any("head" in n for n in names)
    assert not any("word_embeddings" in n for n in names)  # frozen weights are not saved under PEFT
    moved = [k for k in ckpt if k.startswith("step00002/")]
    assert any(not np.array_equal(ckpt[k], ckpt[k.replace("step00002", "step00000")]) for k in moved)


def test_resume_trains_only_missing_runs(tmp_path, tiny_bert):
    cfg = _config(tiny_bert, n_runs=3)
    collect(_config(tiny_bert, n_runs=1), tmp_path, progress=False)  # same fingerprint, fewer runs
    first = (tmp_path / "run-00000.npz").stat().st_mtime_ns
    runs = collect(cfg, tmp_path, progress=False)
    assert len(runs) == 3 and (tmp_path / "run-00000.npz").stat().st_mtime_ns == first
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert recorded["config"]["n_runs"] == 3 and "--n-runs 3" in recorded["command"]  # the extension is recorded
    reference = collect(cfg, tmp_path / "fresh", progress=False)
    for r, s in zip(runs, reference):
        np.testing.assert_allclose(r.losses, s.losses, atol=1e-6)


def test_kill_9_then_rerun_completes_without_corruption(tmp_path, tiny_bert):
    out = tmp_path / "killed"
    cfg = _config(tiny_bert, n_runs=6, subset_size=12)
    args = [sys.executable, "-m", "simflib", "collect", "--out", str(out), "--no-progress"]
    for key, value in cfg.__dict__.items():
        if value is not None:
            args += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=Path(__file__).parents[2])
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "run-00001.npz").exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in out.glob("run-*.npz"))
    assert 2 <= len(done) < 6, f"the kill should land mid-collection, found {done}"
    runs = collect(cfg, out, progress=False)
    assert len(runs) == 6 and not list(out.glob(".*.tmp"))
    reference = collect(cfg, tmp_path / "reference", progress=False)
    for r, s in zip(runs, reference):
        np.testing.assert_allclose(r.losses, s.losses, atol=1e-6)


def test_a_folder_of_another_configuration_is_refused(tmp_path, tiny_bert):
    collect(_config(tiny_bert, n_runs=1), tmp_path, progress=False)
    with pytest.raises(ValueError, match="different configuration .*lr"):
        collect(_config(tiny_bert, n_runs=1, lr=0.1), tmp_path, progress=False)
    (tmp_path / "orphans").mkdir()
    (tmp_path / "orphans" / "run-00000.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="no config.json"):
        collect(_config(tiny_bert), tmp_path / "orphans", progress=False)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"task": "mnli"}, "task: unknown task 'mnli'"),
        ({"method": "prefix"}, "method: unknown tuning method 'prefix'"),
        ({"subset_size": 50}, "subset_size=50 is larger than the pool"),
        ({"m": 5000}, "fewer than n_pool \\+ m"),
        ({"model": "no-such-org/no-such-model"}, "could not be loaded offline"),
    ],
)
def test_bad_configurations_fail_before_training(tmp_path, tiny_bert, fields, message):
    with pytest.raises(ValueError, match=message):
        collect(_config(fields.pop("model", tiny_bert), **fields), tmp_path / "out", progress=False)
    assert not list((tmp_path / "out").glob("run-*")) if (tmp_path / "out").exists() else True


def test_config_json_is_the_provenance(tmp_path, tiny_bert):
    collect(_config(tiny_bert, n_runs=1), tmp_path, progress=False)
    info = json.loads((tmp_path / "config.json").read_text())
    assert info["config"]["task"] == "piqa" and info["versions"]["torch"]
    assert set(info) >= {"fingerprint", "versions", "command", "pool_ids", "test_ids", "python"}
    run_meta = load_collected(tmp_path).meta["runs"][0]
    from simflib import RunSet

    assert len(RunSet.load(tmp_path)) == 1  # a collected folder loads like a file
    assert run_meta["wall_time_s"] > 0 and run_meta["device"] == "cpu"
    import torch

    model, _, capability = run_meta["processor"].rpartition(", ")
    assert capability == torch.backends.cpu.get_cpu_capability()
    if Path("/proc/cpuinfo").is_file():
        assert f"model name\t: {model}\n" in Path("/proc/cpuinfo").read_text()


@pytest.mark.parametrize("method", ["full", "lora"])
def test_every_method_trains_deterministically(tmp_path, tiny_bert, method):
    from safetensors.numpy import load_file

    cfg = _config(tiny_bert, method=method, n_runs=1, lr=0.01, checkpoints=2)
    a = collect(cfg, tmp_path / "a", progress=False)
    b = collect(cfg, tmp_path / "b", progress=False)
    np.testing.assert_allclose(a[0].losses, b[0].losses, atol=1e-6)
    assert np.abs(np.diff(a[0].losses, axis=0)).max() > 0
    names = {k.split("/", 1)[1] for k in load_file(str(tmp_path / "a" / "run-00000.ckpt.safetensors"))}
    if method == "lora":
        assert all("lora_" in n or n.startswith("head.") for n in names)
    else:
        assert any("word_embeddings" in n for n in names)  # full tuning trains (and saves) everything


def test_dask_local_cluster_executor_gives_the_same_runs(tmp_path, tiny_bert):
    distributed = pytest.importorskip("distributed")
    cfg = _config(tiny_bert, n_runs=3)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            runs = collect(cfg, tmp_path / "dask", executor=client.get_executor(), progress=False)
    reference = collect(cfg, tmp_path / "inline", progress=False)
    assert len(runs) == 3
    for r, s in zip(runs, reference):
        np.testing.assert_array_equal(r.curriculum, s.curriculum)
        np.testing.assert_allclose(r.losses, s.losses, atol=1e-6)


def test_submitit_local_job_array_gives_the_same_runs(tmp_path, tiny_bert):
    pytest.importorskip("submitit")
    from simflib.executors import SubmititExecutor

    cfg = _config(tiny_bert, n_runs=3)
    executor = SubmititExecutor(tmp_path / "logs", cluster="local", poll_s=0.2, timeout_min=10)
    collect(_config(tiny_bert, n_runs=1), tmp_path / "array", progress=False)  # run 0 exists: only 1 and 2 are jobs
    runs = collect(cfg, tmp_path / "array", executor=executor, progress=False)
    executor.shutdown()
    assert len(list((tmp_path / "logs").glob("*_result.pkl"))) == 2  # one result per job of the array
    reference = collect(cfg, tmp_path / "inline", progress=False)
    for r, s in zip(runs, reference, strict=True):
        np.testing.assert_array_equal(r.curriculum, s.curriculum)
        np.testing.assert_allclose(r.losses, s.losses, atol=1e-6)


def test_a_failed_submitit_job_raises_in_the_collecting_process(tmp_path):
    pytest.importorskip("submitit")
    from simflib.executors import SubmititExecutor

    executor = SubmititExecutor(tmp_path / "logs", cluster="local", poll_s=0.2, timeout_min=5)
    [ok, bad] = executor.submit_array(divmod, [(7, 2), (1, 0)])
    assert ok.result(timeout=120) == (3, 1)
    with pytest.raises(Exception, match="ZeroDivisionError"):
        bad.result(timeout=120)
    executor.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(divmod, 1, 1)


def test_train_curriculum_matches_the_recorded_run_and_trains_edits(tmp_path, tiny_bert):
    from simflib import curriculum as C
    from simflib.collect import Setting

    cfg = _config(tiny_bert, n_runs=1, subset_size=12)
    recorded = collect(cfg, tmp_path, progress=False)[0]
    setting = Setting(cfg)
    again = setting.train_curriculum(recorded.curriculum)
    np.testing.assert_allclose(again.losses, recorded.losses, atol=1e-6)
    edited = setting.train_curriculum(C.swap_steps(recorded.curriculum, 1, 3))
    assert not np.allclose(edited.losses[1], recorded.losses[1])  # a different first step changes the trajectory
    with pytest.raises(ValueError, match="out of range"):
        setting.train_curriculum([[0, 99]])


def test_device_is_not_part_of_the_fingerprint_but_the_data_is():
    cpu = CollectConfig(task="boolq")
    assert CollectConfig(task="boolq", device="cuda").fingerprint() == cpu.fingerprint()
    assert CollectConfig(task="boolq", lr=2e-2).fingerprint() != cpu.fingerprint()


@pytest.mark.parametrize("epochs", ["0.001", "inf", "nan"])
def test_impossible_epochs_fail_before_the_folder_is_touched(tmp_path, epochs):
    """Finding: an epoch count with no step, or inf, crashed midway and left a config.json that locked the folder."""
    from simflib.collect import main

    out = tmp_path / "out"
    with pytest.raises(ValueError, match="epochs"):
        main(["--task", "boolq", "--epochs", epochs, "--out", str(out), "--no-progress"])
    assert not out.exists()


def test_every_collect_option_has_a_description():
    from simflib.collect import parser

    actions = [a for a in parser()._actions if a.option_strings]
    assert len(actions) >= 18
    assert all(a.help and len(a.help) > 5 for a in actions), [a.dest for a in actions if not a.help]


def test_the_first_recorded_step_equals_a_hand_written_adamw_step(tmp_path, tiny_bert):
    """Independent of the collector's loop: one AdamW step on the first batch, written out with PyTorch's
    cross-entropy and the test losses scored one example at a time, gives the recorded losses after step 1."""
    import torch

    from simflib.collect import Setting

    cfg = _config(tiny_bert, n_runs=1)
    run = collect(cfg, tmp_path, progress=False)[0]
    setting = Setting(cfg)  # the initial model and encodings of the setting
    model = setting.model
    model.load_state_dict(setting.initial)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)

    def test_losses() -> np.ndarray:
        with torch.no_grad():
            data = setting.test_data
            return np.array([
                torch.nn.functional.cross_entropy(model(**data.select(torch.tensor([j]))), data.labels[[j]]).item()
                for j in range(len(data))
            ])

    np.testing.assert_allclose(test_losses(), run.losses[0], rtol=0, atol=1e-6)
    batch = torch.as_tensor(run.curriculum[0][run.curriculum[0] >= 0])
    logits = model(**setting.train_data.select(batch))
    loss = torch.nn.functional.cross_entropy(logits, setting.train_data.labels[batch])  # the batch mean
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    np.testing.assert_allclose(test_losses(), run.losses[1], rtol=0, atol=1e-6)
    assert run.extras["train_loss"][0] == pytest.approx(loss.item(), abs=1e-6)


def test_extra_pool_examples_leave_other_fingerprints_alone_and_widen_the_curricula():
    import dataclasses

    from simflib.collect import DEFAULT_SETTINGS

    base = DEFAULT_SETTINGS["piqa-minilm-ia3"]
    # A field added after runs were committed: at its default it is not hashed, so recorded fingerprints stay valid.
    assert dataclasses.replace(base, n_extra=0).fingerprint() == base.fingerprint()
    wider = dataclasses.replace(base, n_extra=10)
    assert wider.fingerprint() != base.fingerprint() and wider.pool_size == 110
    assert max(int(wider.curriculum(k).max()) for k in range(5)) >= 100
    assert max(int(base.curriculum(k).max()) for k in range(5)) < 100
    with pytest.raises(ValueError, match="n_extra"):
        dataclasses.replace(base, n_extra=-1).validate()
