"""Memory of per-example gradients on a real causal LM: SmolLM2-135M with LoRA, chunked vmap against a loop.

TracIn-CP and influence functions need one gradient per example. vmapping ``torch.func.grad`` over a chunk of
examples holds the activations of the whole chunk at once, so the chunk size bounds the memory. Each
configuration runs in a fresh process (peak resident memory is per process); the baseline is a process that
loads the same model and scores the same examples without gradients. All gradients must equal the loop's
(relative error <= 1e-4) before memory and time are compared.

Run: ``python benchmarks/bench_memory.py [--examples 32] [--chunks 1 4 16] [--max-length 64]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

LIMIT_GIB = 24.0  # the machines this project runs on


def worker(mode: str, chunk: int, n: int, max_length: int, out: str) -> None:
    import numpy as np
    import torch

    from simflib.gradients import per_example_gradients
    from simflib.models import AnswerLM, apply_method, encode, example_losses, load_model
    from simflib.tasks import load_task

    lm, tokenizer, kind = load_model("smollm2")
    torch.manual_seed(0)  # LoRA's A matrices are initialised at random: the same in every process
    model = apply_method(AnswerLM(lm, kind=kind), "lora").eval()
    data = encode(load_task("piqa")[:n], tokenizer, mode=kind, max_length=max_length)
    start = time.perf_counter()
    if mode == "forward":
        example_losses(model, data)
        grads = None
    else:
        grads = per_example_gradients(model, data, method=mode, chunk_size=chunk)
    seconds = time.perf_counter() - start
    if grads is not None:
        np.save(out, grads.numpy())
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux
    print(json.dumps({"mode": mode, "chunk": chunk, "seconds": seconds, "peak_gib": peak_gib,
                      "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--worker", nargs=3, metavar=("MODE", "CHUNK", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        mode, chunk, out = args.worker
        worker(mode, int(chunk), args.examples, args.max_length, out)
        return 0

    import numpy as np

    from simflib.models import resolve_model

    resolve_model("smollm2")  # dequantise once, outside the measured processes
    tmp = Path(__import__("tempfile").mkdtemp())
    configs = [("forward", 0), ("loop", 1)] + [("vmap", c) for c in args.chunks]
    results = []
    for mode, chunk in configs:
        out = str(tmp / f"{mode}-{chunk}.npy")
        cmd = [sys.executable, __file__, "--examples", str(args.examples), "--max-length", str(args.max_length),
               "--worker", mode, str(chunk), out]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["grads"] = np.load(out) if mode != "forward" else None
        results.append(row)
    base, loop = results[0], results[1]
    print(f"SmolLM2-135M + LoRA ({loop['parameters']:,} trainable parameters), {args.examples} PIQA examples, "
          f"max length {args.max_length}; peak resident memory per process")
    print(f"{'configuration':<22}{'peak GiB':>10}{'x forward-only':>16}{'s / example':>13}{'x loop time':>13}{'max rel err':>13}")
    ok = True
    for row in results:
        label = row["mode"] if row["mode"] != "vmap" else f"vmap, chunk {row['chunk']}"
        err = ""
        if row["grads"] is not None:
            rel = np.abs(row["grads"] - loop["grads"]).max() / np.abs(loop["grads"]).max()
            err = f"{rel:.1e}"
            ok &= bool(rel <= 1e-4)
        print(f"{label:<22}{row['peak_gib']:>10.2f}{row['peak_gib'] / base['peak_gib']:>16.2f}"
              f"{row['seconds'] / args.examples:>13.3f}{row['seconds'] / loop['seconds'] if row['grads'] is not None else float('nan'):>13.2f}{err:>13}")
        ok &= row["peak_gib"] < LIMIT_GIB
    print("all gradients agree with the loop and every peak is under "
          f"{LIMIT_GIB:.0f} GiB" if ok else "FAILED: a gradient disagrees or a peak exceeds the limit")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
