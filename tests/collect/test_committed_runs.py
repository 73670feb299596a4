"""The committed runs under data/runs/ are what the code produces: regenerate a prefix of one and compare."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simflib.collect import DEFAULT_SETTINGS, load_collected, regenerate

DATA = Path(__file__).resolve().parents[2] / "data" / "runs"


# Settings still being recorded (resumably, over several sittings): their runs must be consistent, and this
# list must shrink once they are complete.
IN_PROGRESS: set[str] = set()


def _collected(name: str) -> Path:
    folder = DATA / name
    if not (folder / "config.json").is_file() or not list(folder.glob("run-*.npz")):
        if name in IN_PROGRESS:
            pytest.skip(f"{name} is being recorded and has no run yet")
        pytest.fail(f"{name} is a default setting without committed runs in {folder}")
    return folder


def test_in_progress_names_default_settings():
    assert IN_PROGRESS <= set(DEFAULT_SETTINGS)


# A prefix of a run regenerates on this CPU to within float rounding of what was recorded: 1e-5 for runs recorded on
# a CPU, 5e-5 for runs recorded on a GPU (fp32 without TF32; measured at 4.5e-6 after 8 steps and 6.3e-5 after 64,
# BoolQ-IA3, H100). Every committed setting is checked at run 0, and the extended settings at a run recorded for
# the extension too. SmolLM2 steps cost seconds each on a CPU, so its prefix is shorter.
REGENERATED = [(name, 0) for name in sorted(DEFAULT_SETTINGS)] + [("boolq-minilm-ia3", 40), ("piqa-minilm-ia3", 40)]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "run_index"), REGENERATED, ids=lambda x: str(x))
def test_regenerated_prefix_matches_committed_run(name, run_index):
    folder = _collected(name)
    runs = load_collected(folder)
    assert runs.meta["fingerprint"] == DEFAULT_SETTINGS[name].fingerprint()
    by_index = dict(zip(runs.run_indices(), zip(runs, runs.meta["runs"])))
    if run_index not in by_index:
        pytest.skip(f"{name} has no run {run_index} in this checkout")
    recorded, info = by_index[run_index]
    steps = 2 if DEFAULT_SETTINGS[name].model == "smollm2" else 6
    atol = 1e-5 if info["device"] == "cpu" else 5e-5
    fresh = regenerate(folder, run_index, max_steps=steps, device="cpu")
    np.testing.assert_array_equal(fresh.curriculum, recorded.curriculum[:steps])
    # On another CPU than the recording one (same library versions), SmolLM2's losses of up to 8 nats differed by
    # up to 4.2e-6 of their value (2.6e-5 nats): the relative term covers them.
    np.testing.assert_allclose(fresh.losses, recorded.losses[: steps + 1], rtol=1e-5, atol=atol)
    # Metrics recorded beside the loss: greedy generations token for token, their scores exactly; option
    # probabilities to float rounding (runs recorded before metrics existed have none).
    if recorded.generations is not None:
        np.testing.assert_array_equal(fresh.generations, recorded.generations[: steps + 1])
    for metric, values in recorded.metrics.items():
        # p_correct is a sigmoid of the difference of two summed log-likelihoods (tens of nats): 4e-6 of a sum
        # moves it by up to 1e-4 times p(1 - p); measured 1.6e-5 on another CPU than the recording one.
        tolerance = 0 if recorded.generations is not None or metric == "accuracy" else 10 * atol
        np.testing.assert_allclose(fresh.metrics[metric], values[: steps + 1], rtol=0, atol=tolerance, err_msg=metric)


@pytest.mark.parametrize("name", sorted(DEFAULT_SETTINGS))
def test_committed_settings_are_complete_and_consistent(name):
    folder = _collected(name)
    runs = load_collected(folder)
    cfg = DEFAULT_SETTINGS[name]
    assert runs.meta["config"]["task"] == cfg.task and runs.m == cfg.m and runs.n_train == cfg.pool_size
    if name in IN_PROGRESS:
        assert len(runs) < cfg.n_runs, f"{name} is complete: take it out of IN_PROGRESS"
    else:
        assert len(runs) == cfg.n_runs, f"{name}: {len(runs)} of {cfg.n_runs} runs collected"
    assert all(r.n_steps == runs[0].n_steps for r in runs)
    # Every run starts from the same model. Runs recorded in different sittings may land on different machines:
    # piqa-smollm2-lora-m100's runs 21-31 start from initial losses 1.6e-6 (relative) from those of runs 0-20.
    initial = np.stack([r.initial_loss for r in runs])
    np.testing.assert_allclose(initial, initial[:1].repeat(len(runs), 0), rtol=1e-5, atol=0)


TRACIN = DATA.parent / "tracin"
# TracIn-CP sums still being computed (resumably): they must cover part of the fit runs, and this list must shrink.
TRACIN_IN_PROGRESS: set[str] = set()  # "<setting>/<folder>" keys


def test_tracin_in_progress_names_committed_folders():
    assert all((TRACIN / key / "config.json").is_file() for key in TRACIN_IN_PROGRESS)


@pytest.mark.parametrize("folder", sorted(p.parent for p in TRACIN.glob("*/*/config.json")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_tracin_sums_belong_to_their_runs(folder):
    """The sums were computed for the committed runs' fit split, and each file belongs to its run: it summed that
    run's recorded test losses over exactly the checkpoint steps 0..T-1 (a file of another run, or of a
    different set of steps, has other sums)."""
    from simflib.baselines import HypotheticalSums
    from simflib.runs import PAPER_SPLIT

    info = json.loads((folder / "config.json").read_text())
    runs = load_collected(DATA.parent.parent / info["folder"], n_runs=sum(PAPER_SPLIT))
    assert info["fingerprint"] == runs.meta["fingerprint"]
    fit, _, _ = runs.split(seed=info["split_seed"], sizes=PAPER_SPLIT)
    assert info["run_indices"] == [runs.meta["runs"][i]["run_index"] for i in fit.meta["run_indices"]]
    done = sorted(int(p.stem.split("-")[1]) for p in folder.glob("run-*.npz"))
    assert set(done) <= set(info["run_indices"]), "sums of runs outside the fit split"
    key = f"{folder.parent.name}/{folder.name}"
    if key in TRACIN_IN_PROGRESS:
        assert 0 < len(done) < len(info["run_indices"]), f"{key} is complete: take it out of TRACIN_IN_PROGRESS"
    else:
        assert done == sorted(info["run_indices"]), f"{key}: sums for {len(done)} of {len(info['run_indices'])} runs"
    position = {info_k["run_index"]: i for i, info_k in enumerate(runs.meta["runs"])}
    for k in done:
        sums = HypotheticalSums.load(folder / f"run-{k:05d}.npz")
        run = runs[position[k]]
        assert (sums.n_train, sums.m) == (runs.n_train, runs.m)
        if info["checkpoints"] == "all":  # every step before the last: theta_0 .. theta_{T-1}
            assert sums.count == run.n_steps
            for got, want in ((sums.loss, run.losses[:-1].sum(axis=0)), (sums.loss_sq, (run.losses[:-1] ** 2).sum(axis=0))):
                np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=f"run {k}")
