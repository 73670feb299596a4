"""Cost of recording a run, step by step, against its two unavoidable parts measured in the same process.

Per step, collection must train once and score the m test examples once: one batched forward pass (an encoder's
option logits; a language model's log-likelihood of every option of a choice task), or for a generation task one
forward pass for the loss and one batched greedy decoding. This benchmark times a recorded run of a setting and,
separately, the same number of bare training steps and bare scoring passes, and prints the ratio (target: <= 1.15),
where the time goes (training, scoring, the rest), and one full run's wall time per setting.

Run: ``python benchmarks/bench_collect.py [--settings boolq-minilm-ia3 ...] [--steps 16]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import torch

from simflib.collect import DEFAULT_SETTINGS, GENERATION_BATCH, Setting
from simflib.models import example_losses, greedy_generate, option_scores, per_example_loss


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare_score(setting: Setting) -> None:
    """The scoring a step cannot do without, outside the recorder."""
    if setting.generative:
        example_losses(setting.model, setting.test_data, batch_size=setting.eval_batch)
        eos = setting.tokenizer.eos_token_id
        greedy_generate(setting.model, setting.prompts, max_new_tokens=setting.config.max_new_tokens,
                        eos_token_id=eos, pad_token_id=eos, batch_size=GENERATION_BATCH)
    else:
        data = setting.test_data if setting.option_data is None else setting.option_data
        option_scores(setting.model, data, batch_size=setting.eval_batch)


def measure(name: str, steps: int, device: str) -> tuple[str, float, float, float, dict[str, float]]:
    config = dataclasses.replace(DEFAULT_SETTINGS[name], checkpoints=10, device=device)
    setting = Setting(config)
    setting.run(0, max_steps=2)  # warm up
    start = time.perf_counter()
    run, _, info = setting.run(0, max_steps=steps)
    per_step_collect = (time.perf_counter() - start) / steps
    split = {"train": info["train_time_s"] / steps, "score": info["score_time_s"] / steps}
    split["rest"] = per_step_collect - split["train"] - split["score"]

    model = setting.model
    model.load_state_dict(setting.initial)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    curriculum = config.curriculum(0)
    start = time.perf_counter()
    for t in range(steps):
        batch = torch.as_tensor(curriculum[t][curriculum[t] >= 0], device=device)
        loss = per_example_loss(model(**setting.train_data.select(batch)), setting.train_data.labels[batch]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _sync(device)
    train = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    for _ in range(steps):
        bare_score(setting)
    _sync(device)
    score = (time.perf_counter() - start) / steps
    full_run = per_step_collect * curriculum.shape[0] + score
    return name, per_step_collect / (train + score), per_step_collect, full_run, split


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="*", default=list(DEFAULT_SETTINGS),
                        help="settings to measure (default: every committed setting)")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{torch.get_num_threads()} CPU threads"
    print(f"torch {torch.__version__}, {where}, {args.steps} steps per measurement\n")
    print(f"{'setting':<22} {'collect/(train+score)':>22} {'s/step':>8} {'train':>6} {'score':>6} {'rest':>6} "
          f"{'one full run (s)':>17}")
    ok = True
    for name in args.settings:
        name, ratio, per_step, full, split = measure(name, args.steps, args.device)
        ok &= ratio <= 1.15
        print(f"{name:<22} {ratio:22.3f} {per_step:8.2f} {split['train']:6.2f} {split['score']:6.2f} "
              f"{split['rest']:6.2f} {full:17.0f}")
    print(f"\n[{'ok' if ok else 'MISSED'}] collection overhead <= 1.15 x (training step + scoring)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
