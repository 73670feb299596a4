"""TracIn-CP on recorded runs (§4.2): checkpoints, hypothetical loss reductions at them, and their sums.

At a checkpoint theta_c of a run, a hypothetical step on training example z_i would change the loss of test
example z_j by about ``-eta_c grad L(z_i; theta_c) . grad L(z_j; theta_c)`` (first order; Eq. 7). Gradients of the
n pool and m test examples are computed once per checkpoint and multiplied (Appendix A.3), giving a (n, m) block of
reductions per checkpoint. :func:`simflib.baselines.tracin_cp` sums them into TracIn-CP scores;
:class:`simflib.baselines.HypotheticalSums` keeps what a Hypothetical Simfluence fit needs.

Two variants, as in the paper's Table 1: the checkpoints a run saved (10, evenly spaced), and every step of every
training run (the best case; the checkpoints are re-created by re-training without scoring).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray

from simflib.baselines import HypotheticalSums
from simflib.collect import Setting, split_checkpoints
from simflib.gradients import gradient_products, load_parameters
from simflib.runs import Run
from simflib.storage import checkpoint_file_name, run_file_name

State = Mapping[str, np.ndarray]


def checkpoint_path(folder: str | os.PathLike[str], run_index: int) -> Path:
    """Where :func:`simflib.collect.collect` saves a run's checkpoints."""
    return Path(folder) / checkpoint_file_name(run_index)


def load_checkpoints(
    folder: str | os.PathLike[str], run_index: int, *, steps: Iterable[int] | None = None
) -> dict[int, dict[str, np.ndarray]]:
    """Saved trainable parameters of one run of a collected folder.

    Args:
        folder: A folder written by :func:`simflib.collect.collect`.
        run_index: Which run.
        steps: Steps wanted (default: all saved).

    Returns:
        ``{t: {parameter name: array}}`` for theta_t, the parameters after t updates.

    Raises:
        ValueError: If the run has no checkpoint file, the file belongs to another configuration, a requested step
            was not saved, or the saved steps do not hold the same parameters.
    """
    from safetensors import safe_open

    path = checkpoint_path(folder, run_index)
    if not path.is_file():
        raise ValueError(
            f"{folder}: run {run_index} has no saved checkpoints ({path.name} is missing); re-create them with "
            f"Setting(config).checkpoints({run_index}, steps)"
        )
    try:
        with safe_open(str(path), "np") as handle:
            fingerprint = (handle.metadata() or {}).get("fingerprint")
            flat = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open has no items()
    except Exception as err:  # safetensors raises its own error types on damaged files  # noqa: BLE001
        raise ValueError(f"{path}: run {run_index}: damaged or truncated checkpoint file ({err})") from None
    config = json.loads((Path(folder) / "config.json").read_text())
    if fingerprint != config["fingerprint"]:
        raise ValueError(
            f"{path}: checkpoints of configuration {fingerprint}, not the folder's {config['fingerprint']}"
        )
    states = split_checkpoints(flat)
    check_same_parameters(states, where=f"{path.name}")
    if steps is not None:
        wanted = sorted({int(t) for t in steps})
        missing = [t for t in wanted if t not in states]
        if missing:
            raise ValueError(
                f"run {run_index}: no checkpoint saved for step(s) {missing[:5]}; saved steps: {sorted(states)}"
            )
        states = {t: states[t] for t in wanted}
    return states


def check_same_parameters(states: Mapping[int, State], *, where: str = "checkpoints") -> None:
    """Raise ValueError naming the step whose parameter names or shapes differ from the first checkpoint's."""
    if not states:
        raise ValueError(f"{where}: no checkpoints")
    first_step, first = next(iter(states.items()))
    reference = {name: np.shape(value) for name, value in first.items()}
    for step, state in states.items():
        shapes = {name: np.shape(value) for name, value in state.items()}
        if shapes != reference:
            differ = sorted(set(shapes) ^ set(reference)) or sorted(k for k in shapes if shapes[k] != reference[k])
            raise ValueError(
                f"{where}: checkpoint of step {step} does not match step {first_step}'s parameters ({differ[:3]})"
            )


def hypothetical_reductions(
    setting: Setting, run: Run, states: Mapping[int, State], *, chunk_size: int = 16
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """First-order hypothetical reductions ``eta_t / b grad L_t(z_i) . grad L_t(z_j)`` at each checkpoint of a run.

    ``b`` is the setting's batch size: a run's step follows the gradient of its batch's *mean* loss, so each
    example of a batch moves the parameters by 1/b of what a step on it alone would (mini-batch TracIn, Pruthi
    et al. 2020).

    Args:
        setting: The run's setting (model, pool and test encodings).
        run: The recorded run: its losses give ``L_t`` and its ``learning_rate`` extra gives ``eta_t``.
        states: ``{t: trainable parameters theta_t}``.
        chunk_size: Examples per vmapped gradient chunk.

    Returns:
        (C, m) losses at the checkpoints and (C, n, m) reductions, in step order.

    Raises:
        ValueError: On a checkpoint step outside the run, mismatched parameters, or a non-finite gradient (naming
            the step and the example).
    """
    check_same_parameters(states)
    if "learning_rate" not in run.extras:
        raise ValueError("run has no 'learning_rate' extra: the step sizes eta_t of Eq. 7 are unknown")
    eta = np.asarray(run.extras["learning_rate"], dtype=np.float64)
    steps = sorted(states)
    bad = [t for t in steps if not 0 <= t < run.n_steps]
    if bad:
        raise ValueError(f"checkpoint steps {bad[:5]} are outside the run's steps 0..{run.n_steps - 1}")
    reductions = np.empty((len(steps), setting.config.pool_size, run.m))
    try:
        for c, t in enumerate(steps):
            state = {name: torch.as_tensor(value, device=setting.config.device) for name, value in states[t].items()}
            try:
                products = gradient_products(
                    setting.model, state, setting.train_data, setting.test_data, chunk_size=chunk_size
                )
            except ValueError as err:
                raise ValueError(f"checkpoint of step {t}: {err}") from None
            reductions[c] = eta[t] / setting.config.batch_size * products.double().cpu().numpy()
    finally:
        setting.model.load_state_dict(setting.initial)
    return run.losses[steps], reductions


def hypothetical_sums(
    setting: Setting, run: Run, states: Mapping[int, State], *, chunk_size: int = 16
) -> HypotheticalSums:
    """:func:`hypothetical_reductions` summed over the checkpoints, one checkpoint in memory at a time."""
    total: HypotheticalSums | None = None
    for t in sorted(states):
        loss, reduction = hypothetical_reductions(setting, run, {t: states[t]}, chunk_size=chunk_size)
        part = HypotheticalSums.from_arrays(loss, reduction, batch_size=setting.config.batch_size)
        total = part if total is None else total + part
    if total is None:
        raise ValueError("hypothetical_sums: no checkpoints")
    return total


def accumulate_sums(
    setting: Setting,
    runs: Mapping[int, Run],
    out_dir: str | os.PathLike[str],
    *,
    checkpoints: Literal["saved", "all"] | Sequence[int] = "all",
    folder: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> HypotheticalSums:
    """TracIn-CP's hypothetical sums over several runs, one file per run in ``out_dir`` (resumable).

    Args:
        setting: The runs' setting.
        runs: ``{run index: recorded run}``.
        out_dir: Folder for the per-run sums (``run-XXXXX.npz``); runs already there are read, not recomputed.
        checkpoints: ``"all"`` (every step, re-created by re-training), ``"saved"`` (the checkpoints saved in
            ``folder``), or explicit steps (re-created).
        folder: The collected folder (needed for ``"saved"``).
        progress: Show a progress bar over runs.

    Returns:
        The sums over all the runs' checkpoints.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items: Iterable[tuple[int, Run]] = list(runs.items())
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="TracIn-CP checkpoints", unit="run")
    total: HypotheticalSums | None = None
    for k, run in items:
        path = out / run_file_name(k)
        if path.is_file():
            part = HypotheticalSums.load(path)
        else:
            if checkpoints == "saved":
                if folder is None:
                    raise ValueError("accumulate_sums: checkpoints='saved' needs the collected folder")
                states = load_checkpoints(folder, k)
            else:
                states = setting.checkpoints(k, None if checkpoints == "all" else checkpoints)
            part = hypothetical_sums(setting, run, states)
            part.save(path)
        total = part if total is None else total + part
    if total is None:
        raise ValueError("accumulate_sums: no runs")
    return total


def one_step_check(
    setting: Setting, state: State, train_index: int, *, optimizer: Literal["sgd", "adam"], lr: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Actual against first-order hypothetical loss reduction of one real step on one training example.

    From the checkpoint ``state``, takes a single step on training example ``train_index`` with a fresh optimizer
    and measures every test example's loss reduction. The first-order prediction is TracIn-CP's
    ``lr * grad L(z_i) . grad L(z_j)``, which is what plain SGD would do to first order. Adam's first step moves
    each coordinate by about ``lr * sign(gradient)`` instead, so its reductions have another scale: the paper's
    explanation of TracIn-CP's large MSE (§5).

    Returns:
        (m,) actual reductions and (m,) first-order predictions.
    """
    import torch

    from simflib.models import example_losses, per_example_loss

    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    if not 0 <= train_index < setting.config.pool_size:
        raise ValueError(f"train_index {train_index} is outside the pool 0..{setting.config.pool_size - 1}")
    model = setting.model
    device = setting.config.device
    try:
        state_t = {k: torch.as_tensor(v, device=device) for k, v in state.items()}
        one = setting.train_data
        products = gradient_products(model, state_t, one.subset([train_index]), setting.test_data)[0]
        load_parameters(model, state_t)  # the step is taken from the checkpoint
        before = example_losses(model, setting.test_data, batch_size=setting.eval_batch)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=lr) if optimizer == "sgd" else torch.optim.Adam(params, lr=lr)
        index = torch.tensor([train_index], device=device)
        loss = per_example_loss(model(**one.select(index)), one.labels[index]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        after = example_losses(model, setting.test_data, batch_size=setting.eval_batch)
    finally:
        model.load_state_dict(setting.initial)
    return (before - after).double().cpu().numpy(), lr * products.double().cpu().numpy()


def load_sums(out_dir: str | os.PathLike[str], run_indices: Iterable[int]) -> tuple[HypotheticalSums, list[int]]:
    """Add the per-run sums that :func:`accumulate_sums` wrote for ``run_indices`` (those present).

    Returns:
        The sums and the run indices they cover (a job still running covers fewer).

    Raises:
        ValueError: If none of the runs has a file yet.
    """
    out = Path(out_dir)
    found = [k for k in run_indices if (out / run_file_name(k)).is_file()]
    if not found:
        raise ValueError(
            f"{out}: no TracIn-CP sums for runs {list(run_indices)[:5]}...; compute them with "
            f"python -m simflib tracin-cp"
        )
    total = HypotheticalSums.load(out / run_file_name(found[0]))
    for k in found[1:]:
        total = total + HypotheticalSums.load(out / run_file_name(k))
    return total, found


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simflib tracin-cp``: TracIn-CP sums over the fit runs of a collected folder (resumable)."""
    import argparse
    import importlib.metadata as md
    import sys

    from simflib.collect import load_collected
    from simflib.runs import PAPER_SPLIT
    from simflib.storage import atomic_write

    parser = argparse.ArgumentParser(prog="python -m simflib tracin-cp", description=main.__doc__)
    parser.add_argument("folder", help="a collected run folder, e.g. data/runs/boolq-minilm-ia3")
    parser.add_argument(
        "--checkpoints",
        choices=("saved", "all"),
        default="all",
        help="the checkpoints each run saved, or every step (re-created by re-training)",
    )
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the 20/2/10 split whose fit runs are used")
    parser.add_argument("--out", help="output folder (default data/tracin/<folder name>/<checkpoints>-split<seed>)")
    parser.add_argument("--device", help="override the recorded device (cpu, cuda)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    runs = load_collected(args.folder, n_runs=sum(PAPER_SPLIT))
    setting = Setting.recorded(runs, device=args.device)
    config = setting.config
    fit, _, _ = runs.split(seed=args.split_seed, sizes=PAPER_SPLIT)
    by_index = dict(zip(fit.run_indices(), fit))  # pair each run with its own sums by run index, not position
    indices = list(by_index)
    out = Path(
        args.out or Path("data") / "tracin" / Path(args.folder).name / f"{args.checkpoints}-split{args.split_seed}"
    )
    out.mkdir(parents=True, exist_ok=True)
    info = {
        "folder": str(args.folder),
        "fingerprint": runs.meta["fingerprint"],
        "checkpoints": args.checkpoints,
        "split_seed": args.split_seed,
        "run_indices": indices,
        "device": config.device,
        "versions": {p: md.version(p) for p in ("torch", "transformers", "peft")},
        "command": " ".join(["python -m simflib tracin-cp", *(argv if argv is not None else sys.argv[1:])]),
    }
    meta = out / "config.json"
    if meta.is_file():
        old = json.loads(meta.read_text())
        if any(old.get(k) != info[k] for k in ("fingerprint", "checkpoints", "split_seed", "run_indices")):
            raise ValueError(f"{out} holds sums of another folder, split or checkpoint choice; use another --out")
    else:
        text = json.dumps(info, indent=1, sort_keys=True)
        atomic_write(meta, lambda f: f.write(text.encode()))
    sums = accumulate_sums(
        setting,
        {k: by_index[k] for k in indices},
        out,
        checkpoints=args.checkpoints,
        folder=args.folder,
        progress=not args.no_progress,
    )
    print(f"{out}: TracIn-CP sums over {sums.count} checkpoints of {len(indices)} runs", file=sys.stderr)
    return 0
