"""TracIn-CP's cost is per-example gradients: simflib (vmapped, chunked) against a Python loop and Captum.

The same work for all three: at a few saved checkpoints of a committed run, the gradients of every pool and test
example with respect to the trainable parameters, and their products scaled by the step size. The scores are
checked to agree (Pearson >= 0.999) before the times are compared; ratios are against simflib in the same process.

Run: ``python benchmarks/bench_gradients.py [--setting boolq-minilm-ia3] [--checkpoints 2] [--chunk-size 16]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from simflib.collect import CollectConfig, Setting, load_collected
from simflib.gradients import gradient_products, per_example_gradients
from simflib.tracin import hypothetical_reductions, load_checkpoints


def captum_scores(setting: Setting, states: dict, lr: float) -> np.ndarray:
    from captum.influence import TracInCP

    class Logits(torch.nn.Module):
        def __init__(self, model):  # type: ignore[no-untyped-def]
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)

    wrapped = Logits(setting.model)
    trainable = [name for name, p in wrapped.named_parameters() if p.requires_grad]
    layers = sorted({name.rsplit(".", 1)[0] for name in trainable})

    def load(model, key):  # type: ignore[no-untyped-def]
        with torch.no_grad():
            for name, p in setting.model.named_parameters():
                if name in states[int(key)]:
                    p.copy_(torch.as_tensor(states[int(key)][name]))
        return lr

    def tensors(data):  # type: ignore[no-untyped-def]
        return (data.input_ids, data.attention_mask, data.token_type_ids, data.labels)

    train = torch.utils.data.TensorDataset(*tensors(setting.train_data))
    tracin = TracInCP(wrapped, train, checkpoints=[str(t) for t in states], checkpoints_load_func=load,
                      loss_fn=torch.nn.CrossEntropyLoss(reduction="none"), batch_size=16, layers=layers)
    out = tracin.influence(tensors(setting.test_data)).detach().double().numpy().T  # (n, m)
    setting.model.load_state_dict(setting.initial)
    return out


def loop_scores(setting: Setting, states: dict, lr: float) -> np.ndarray:
    def loop(model, data, chunk_size=16):  # type: ignore[no-untyped-def]
        return per_example_gradients(model, data, method="loop")

    total = 0.0
    for state in states.values():
        state_t = {k: torch.as_tensor(v) for k, v in state.items()}
        total = total + lr * gradient_products(setting.model, state_t, setting.train_data, setting.test_data,
                                               gradients=loop).double().numpy()
    setting.model.load_state_dict(setting.initial)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", default="boolq-minilm-ia3")
    parser.add_argument("--runs-dir", default="data/runs")
    parser.add_argument("--checkpoints", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=16)
    args = parser.parse_args()
    folder = Path(args.runs_dir) / args.setting
    runs = load_collected(folder)
    config = CollectConfig(**runs.meta["config"])
    setting = Setting(dataclasses.replace(config, device="cpu"))
    saved = load_checkpoints(folder, 0)
    states = {t: saved[t] for t in list(saved)[: args.checkpoints]}
    lr = config.lr / config.batch_size
    n, m = config.n_pool, config.m
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; {args.setting}: {len(states)} checkpoints, "
          f"{n} pool + {m} test examples, {sum(v.size for v in next(iter(states.values())).values())} parameters\n")

    timings, scores = {}, {}
    start = time.perf_counter()
    scores["simflib (vmap)"] = hypothetical_reductions(setting, runs[0], states, chunk_size=args.chunk_size)[1].sum(0)
    timings["simflib (vmap)"] = time.perf_counter() - start
    start = time.perf_counter()
    scores["python loop"] = loop_scores(setting, states, lr)
    timings["python loop"] = time.perf_counter() - start
    try:
        start = time.perf_counter()
        scores["captum TracInCP"] = captum_scores(setting, states, lr)
        timings["captum TracInCP"] = time.perf_counter() - start
    except ImportError:
        print("captum is not installed: skipped")

    base = timings["simflib (vmap)"]
    ok = True
    print(f"{'method':<18} {'seconds':>8} {'examples/s':>11} {'x simflib time':>15} {'Pearson vs simflib':>19}")
    for name, seconds in timings.items():
        r = float(np.corrcoef(scores[name].ravel(), scores["simflib (vmap)"].ravel())[0, 1])
        ok &= r >= 0.999
        rate = (n + m) * len(states) / seconds
        print(f"{name:<18} {seconds:8.2f} {rate:11.1f} {seconds / base:15.2f} {r:19.6f}")
    if "captum TracInCP" in timings:
        speedup = timings["captum TracInCP"] / base
        ok &= speedup >= 3
        print(f"\n[{'ok' if speedup >= 3 else 'MISSED'}] simflib is {speedup:.1f}x faster than Captum (target >= 3x)")
    print(f"[{'ok' if ok else 'MISSED'}] all scores agree with simflib's (Pearson >= 0.999)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
