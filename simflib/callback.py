"""Record Simfluence runs from your own ``transformers.Trainer``: your model, your data, your training loop.

Usage::

    recorder = TrajectoryRecorder(test_examples, n_train=len(train_dataset))
    trainer = Trainer(model, args, train_dataset=train_dataset,            # a "simflib_index" column per row
                      data_collator=recorder.wrap_collator(collator), callbacks=[recorder])
    trainer.train()
    run = recorder.run()                                                     # a simflib.Run

The train dataset must carry an integer column (``index_column``, default ``"simflib_index"``) holding each row's
index in the training pool; the wrapped collator takes it off every batch and records it, so the recorder knows
which examples each optimizer step consumed. Collated micro-batches are queued in order and each optimizer step
takes ``gradient_accumulation_steps`` of them from the front (the data loader may collate ahead of training).
Requirements, checked when training starts: ``remove_unused_columns=False`` (so that Trainer passes the column to
the collator), ``dataloader_num_workers=0`` (the collator must run in this process), and a number of batches per
epoch divisible by ``gradient_accumulation_steps``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

import simflib.models as models
from simflib.runs import Run

LossFn = Callable[[torch.nn.Module, Mapping[str, torch.Tensor]], torch.Tensor]


def trainer_batch_losses(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per-example loss of a transformers model on a batch with ``labels``: (B,).

    Classification logits (B, C) give the cross-entropy; token logits (B, L, V) give the mean cross-entropy
    over each example's labelled tokens (``-100`` ignored), shifted by one for causal language models.
    """
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits
    if logits.dim() == 3 and getattr(model.config, "is_encoder_decoder", False) is False:
        # transformers' causal labels are the input tokens themselves: position p predicts label p + 1
        logits, labels = logits[:, :-1], labels[:, 1:]
    return models.per_example_loss(logits, labels)


class TrajectoryRecorder(TrainerCallback):
    """A ``TrainerCallback`` that records a run: each step's batch and every test example's loss after it.

    Args:
        test_examples: The m test examples, as features the collator understands (with ``labels``).
        n_train: Size of the training pool (indices in ``index_column`` must be below it).
        collate_fn: Collator for the test examples (default: the wrapped training collator, else stacking).
        loss_fn: ``loss_fn(model, batch) -> (B,)`` per-example losses (default :func:`trainer_batch_losses`).
        index_column: Name of the training pool index column.
        eval_batch_size: Test examples scored together.
    """

    def __init__(
        self,
        test_examples: Sequence[Mapping[str, Any]],
        *,
        n_train: int,
        collate_fn: Callable[[list[Any]], Mapping[str, torch.Tensor]] | None = None,
        loss_fn: LossFn = trainer_batch_losses,
        index_column: str = "simflib_index",
        eval_batch_size: int = 16,
    ) -> None:
        if not test_examples:
            raise ValueError("TrajectoryRecorder: no test examples")
        self.test_examples = list(test_examples)
        self.n_train = int(n_train)
        self.collate_fn = collate_fn
        self.loss_fn = loss_fn
        self.index_column = index_column
        self.eval_batch_size = eval_batch_size
        self._queue: deque[list[int]] = deque()
        self._batches: list[list[int]] = []
        self._losses: list[np.ndarray] = []
        self._lr: list[float] = []
        self._step_lr = float("nan")
        self._train_only = False  # once the training loader is marked, only its collations are recorded
        self._in_train_collate = False

    def wrap_collator(self, collator: Callable[[list[Any]], Any] | None = None) -> Callable[[list[Any]], Any]:
        """A collator that records ``index_column`` of each feature, then calls ``collator`` without it."""
        from transformers import default_data_collator

        inner = collator or default_data_collator
        if self.collate_fn is None:
            self.collate_fn = inner

        def collate(features: list[Any]) -> Any:
            indices = []
            stripped = []
            for k, feature in enumerate(features):
                if self.index_column not in feature:
                    raise ValueError(
                        f"training feature {k} has no {self.index_column!r} column: add each row's pool index, and "
                        f"set remove_unused_columns=False in TrainingArguments"
                    )
                index = int(feature[self.index_column])
                if not 0 <= index < self.n_train:
                    raise ValueError(
                        f"training feature {k}: {self.index_column}={index} is outside [0, {self.n_train})"
                    )
                indices.append(index)
                stripped.append({key: v for key, v in feature.items() if key != self.index_column})
            if self._in_train_collate or not self._train_only:  # an evaluation's batches are not training steps
                self._queue.append(indices)
            return inner(stripped)

        return collate

    # TrainerCallback hooks ---------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        if getattr(args, "remove_unused_columns", False):
            raise ValueError(
                "TrajectoryRecorder needs TrainingArguments(remove_unused_columns=False) so that the pool-index column "
                "reaches the collator"
            )
        if getattr(args, "dataloader_num_workers", 0):
            raise ValueError("TrajectoryRecorder needs TrainingArguments(dataloader_num_workers=0)")
        loader = kwargs.get("train_dataloader")
        accumulation = int(getattr(args, "gradient_accumulation_steps", 1))
        if loader is not None and len(loader) % accumulation:
            raise ValueError(
                f"TrajectoryRecorder: {len(loader)} batches per epoch is not a multiple of "
                f"gradient_accumulation_steps={accumulation}, so steps could not be told apart"
            )
        if loader is not None:
            self._mark_training_collations(loader)
        self._queue.clear()
        self._batches.clear()
        self._lr.clear()
        self._losses = [self._score(model)]

    def _mark_training_collations(self, loader: Any) -> None:
        """Make the training loader's collations the only ones recorded: the Trainer collates evaluation batches
        with the same collator, between training steps."""
        loader = vars(loader).get("base_dataloader", loader)  # accelerate wraps the torch DataLoader it iterates
        original = loader.collate_fn
        if getattr(original, "_simflib_marked", False):
            return

        def marked(features: list[Any]) -> Any:
            self._in_train_collate = True
            try:
                return original(features)
            finally:
                self._in_train_collate = False

        marked._simflib_marked = True  # type: ignore[attr-defined]
        loader.collate_fn = marked
        self._train_only = True

    def on_step_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self._step_lr = float("nan")

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):  # type: ignore[no-untyped-def]
        # The rate this step's update uses: the scheduler advances after the optimizer step, before on_step_end.
        if optimizer is not None:
            self._step_lr = float(optimizer.param_groups[0]["lr"])

    def on_step_end(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        accumulation = int(getattr(args, "gradient_accumulation_steps", 1))
        if len(self._queue) < accumulation:
            raise ValueError(f"TrajectoryRecorder: step {state.global_step} ended before its batches were collated")
        self._batches.append([i for _ in range(accumulation) for i in self._queue.popleft()])
        self._lr.append(self._step_lr)
        self._losses.append(self._score(model))

    def _score(self, model: torch.nn.Module | None) -> np.ndarray:
        if model is None:
            raise ValueError("TrajectoryRecorder: Trainer passed no model to the callback")
        if self.collate_fn is None:
            raise ValueError("TrajectoryRecorder: call wrap_collator(...) and give its result to the Trainer")
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        out = []
        with torch.no_grad():
            for start in range(0, len(self.test_examples), self.eval_batch_size):
                batch = self.collate_fn(self.test_examples[start : start + self.eval_batch_size])
                batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
                out.append(self.loss_fn(model, batch).float().cpu())
        model.train(was_training)
        return torch.cat(out).numpy().astype(np.float64)

    def run(self) -> Run:
        """The recorded run: curriculum (T, b) padded with -1 to the widest step, losses (T + 1, m), and per-step
        ``learning_rate`` as an extra: the rate step t's update used (NaN if the Trainer did not say).

        Raises:
            ValueError: If no step was recorded.
        """
        if not self._batches:
            raise ValueError("TrajectoryRecorder: no training step was recorded")
        width = max(len(b) for b in self._batches)
        curriculum = np.full((len(self._batches), width), -1, dtype=np.int64)
        for t, batch in enumerate(self._batches):
            curriculum[t, : len(batch)] = batch
        return Run(curriculum, np.stack(self._losses), {"learning_rate": np.array(self._lr)})
