"""TrajectoryRecorder inside a real transformers.Trainer with a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from simflib.callback import TrajectoryRecorder, trainer_batch_losses  # noqa: E402

pytestmark = pytest.mark.slow  # trains or loads real models


def _tiny_classifier(dropout=0.1):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=2,
                                     hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return transformers.BertForSequenceClassification(config)


def _rows(n, seed, with_index=True):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        row = {"input_ids": torch.randint(1, 50, (8,), generator=g), "attention_mask": torch.ones(8, dtype=torch.long),
               "labels": torch.tensor(i % 2)}
        if with_index:
            row["simflib_index"] = i
        rows.append(row)
    return rows


def _trainer(model, train, recorder, tmp_path, eval_dataset=None, **kw):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=5, learning_rate=5e-3,
        lr_scheduler_type="linear", report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
        remove_unused_columns=False, seed=0, **kw,
    )
    return transformers.Trainer(model=model, args=args, train_dataset=train, eval_dataset=eval_dataset,
                                data_collator=recorder.wrap_collator(), callbacks=[recorder])


def test_records_batches_losses_and_schedule(tmp_path):
    train, test = _rows(10, 0), _rows(6, 1, with_index=False)
    model = _tiny_classifier()
    recorder = TrajectoryRecorder(test, n_train=10)
    before = trainer_batch_losses(model.eval(), transformers.default_data_collator(test)).detach().numpy()
    _trainer(model, train, recorder, tmp_path).train()
    run = recorder.run()
    assert run.curriculum.shape == (5, 2) and run.losses.shape == (6, 6)
    assert set(run.curriculum.ravel()) <= set(range(10))
    np.testing.assert_allclose(run.losses[0], before, rtol=1e-5)
    after = trainer_batch_losses(model.eval(), transformers.default_data_collator(test)).detach().numpy()
    np.testing.assert_allclose(run.losses[-1], after, rtol=1e-5)
    lr = run.extras["learning_rate"]
    # Finding: the rate was read after the scheduler had advanced, one step late. Linear decay from 5e-3 over 5
    # steps: step t (1-based) updates with 5e-3 * (1 - (t - 1) / 5).
    np.testing.assert_allclose(lr, 5e-3 * (1 - np.arange(5) / 5), rtol=1e-12)
    assert np.abs(np.diff(run.losses, axis=0)).mean() > 0


def test_gradient_accumulation_puts_all_micro_batches_in_one_step(tmp_path):
    recorder = TrajectoryRecorder(_rows(3, 1, with_index=False), n_train=12)
    _trainer(_tiny_classifier(), _rows(12, 0), recorder, tmp_path, gradient_accumulation_steps=2).train()
    run = recorder.run()
    assert run.curriculum.shape == (5, 4)  # 3 steps per epoch: the run crosses an epoch boundary
    first_epoch = run.curriculum[:3].ravel()
    assert sorted(first_epoch.tolist()) == list(range(12))  # each example exactly once per epoch
    recorder = TrajectoryRecorder(_rows(3, 1, with_index=False), n_train=10)
    with pytest.raises(ValueError, match="5 batches per epoch is not a multiple"):
        _trainer(_tiny_classifier(), _rows(10, 0), recorder, tmp_path, gradient_accumulation_steps=2).train()


def test_missing_index_column_or_pruned_columns_are_explained(tmp_path):
    recorder = TrajectoryRecorder(_rows(2, 1, with_index=False), n_train=10)
    with pytest.raises(ValueError, match="has no 'simflib_index' column"):
        _trainer(_tiny_classifier(), _rows(10, 0, with_index=False), recorder, tmp_path).train()
    recorder = TrajectoryRecorder(_rows(2, 1, with_index=False), n_train=10)
    trainer = _trainer(_tiny_classifier(), _rows(10, 0), recorder, tmp_path)
    trainer.args.remove_unused_columns = True
    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        trainer.train()


def test_evaluation_during_training_is_not_recorded_as_a_training_batch(tmp_path):
    """Finding: an evaluation's collated batches were taken as the next training step's examples."""
    train, test = _rows(10, 0), _rows(4, 1, with_index=False)
    evaluation = _rows(10, 2)  # carries the index column too, as a held-out slice of a pool would
    for row in evaluation:
        row["simflib_index"] = 9  # were these recorded, index 9 would appear in every step after an evaluation
    reference = TrajectoryRecorder(test, n_train=10)
    _trainer(_tiny_classifier(dropout=0.0), train, reference, tmp_path / "a").train()  # evaluation draws no masks
    recorder = TrajectoryRecorder(test, n_train=10)
    _trainer(_tiny_classifier(dropout=0.0), train, recorder, tmp_path / "b", eval_dataset=evaluation, eval_strategy="steps",
             eval_steps=1, per_device_eval_batch_size=4, eval_on_start=True).train()
    expected, got = reference.run(), recorder.run()
    np.testing.assert_array_equal(got.curriculum, expected.curriculum)
    np.testing.assert_allclose(got.losses, expected.losses, rtol=1e-6)
