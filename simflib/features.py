"""Computing :class:`~simflib.simulators.features.ExampleFeatures` for a recorded setting (needs torch).

``python -m simflib features data/runs/<setting>`` writes ``data/features/<setting>.npz``: the Adam-preconditioned
gradient products at the initial model for every (pool, test) pair, and frozen MiniLM text embeddings of every
example. Neither needs a training run; both cover all recorded test examples, so a simulator fitted on some test
examples can be asked about the others.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simflib.collect import Setting
from simflib.gradients import per_example_gradients
from simflib.models import Encoded, load_encoder, prompt_and_answer
from simflib.simulators.features import ExampleFeatures
from simflib.tasks import Example

ADAM_EPS = 1e-8
"""AdamW's epsilon (torch's default, which the recorded runs use)."""
TEXT_ENCODER = "minilm"
"""The frozen encoder of the text features (the embedded all-MiniLM-L6-v2)."""


def _blocks(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def preconditioned_products(
    model: torch.nn.Module,
    train: Encoded,
    test: Encoded,
    *,
    block: int = 32,
    chunk_size: int = 16,
    max_bytes: float = 2e9,
) -> np.ndarray:
    """``sum_p g_i[p] g_j[p] / (sqrt(v[p]) + eps)`` for every pool example i and test example j.

    ``g`` are per-example loss gradients of the trainable parameters at the model's current state and ``v`` the
    pool's mean squared gradient: AdamW's step direction for a batch drawn from the pool, before its second moment
    has adapted to one batch. Gradients are computed ``block`` examples at a time. When the pool's gradients fit in
    ``max_bytes`` (adapters) they are kept; otherwise (full fine-tuning) they are recomputed once per block of test
    examples, so memory stays bounded.

    Returns:
        (n, m) float64.
    """
    n, m = len(train), len(test)

    def pool_block(part: slice) -> torch.Tensor:
        return per_example_gradients(model, train, torch.arange(part.start, part.stop), chunk_size=chunk_size).double()

    v: torch.Tensor | None = None
    kept: list[torch.Tensor] = []
    for part in _blocks(n, block):
        g = pool_block(part)
        v = (g**2).sum(0) if v is None else v + (g**2).sum(0)
        if n * g.shape[1] * 8 <= max_bytes:
            kept.append(g)
    assert v is not None
    scale = 1.0 / ((v / n).sqrt() + ADAM_EPS)
    out = np.empty((n, m))
    for tpart in _blocks(m, block):
        g_test = per_example_gradients(model, test, torch.arange(tpart.start, tpart.stop), chunk_size=chunk_size)
        g_test = g_test.double() * scale
        for k, part in enumerate(_blocks(n, block)):
            g = kept[k] if kept else pool_block(part)
            out[part, tpart] = (g @ g_test.T).numpy()
    return out


def text_of(example: Example) -> str:
    """The text an example's embedding is computed from: its prompt and correct answer."""
    prompt, answer = prompt_and_answer(example)
    return prompt + answer


def text_embeddings(texts: Sequence[str], *, encoder: str = TEXT_ENCODER, batch_size: int = 32) -> np.ndarray:
    """The frozen encoder's last-layer [CLS] vector of each text (GPTfluence's featurization), (N, d)."""
    model, tokenizer = load_encoder(encoder)
    model.eval()
    rows = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(  # type: ignore[operator]
                list(texts[start : start + batch_size]),
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=256,
            )
            rows.append(model(**batch).last_hidden_state[:, 0].double().numpy())
    return np.concatenate(rows)


def compute_features(
    setting: Setting, *, gradients: bool = True, text: bool = True, block: int = 32
) -> ExampleFeatures:
    """Features of a setting's pool and test examples (see the module docstring)."""
    from simflib.gradients import load_parameters

    products = pool_text = test_text = None
    if gradients:
        state = {k: v for k, v in setting.initial.items() if k in dict(setting.model.named_parameters())}
        load_parameters(setting.model, state)
        products = preconditioned_products(setting.model, setting.train_data, setting.test_data, block=block)
    if text:
        pool_text = text_embeddings([text_of(e) for e in setting.pool])
        test_text = text_embeddings([text_of(e) for e in setting.test])
    meta: dict[str, Any] = {
        "fingerprint": setting.config.fingerprint(),
        "precondition": f"adam (pool mean squared gradient, eps {ADAM_EPS:g})" if gradients else None,
        "text_encoder": TEXT_ENCODER if text else None,
        "versions": {p: _version(p) for p in ("torch", "transformers", "peft")},
    }
    return ExampleFeatures(
        pool_ids=tuple(e.uid for e in setting.pool),
        test_ids=tuple(e.uid for e in setting.test),
        gradient_products=products,
        pool_text=pool_text,
        test_text=test_text,
        meta=meta,
    )


def _version(package: str) -> str:
    import importlib.metadata as md

    return md.version(package)


def features_path(folder: str | os.PathLike[str]) -> Path:
    """Where the features of a run folder live: ``data/features/<folder name>.npz`` beside ``data/runs``."""
    folder = Path(folder)
    return folder.parent.parent / "features" / f"{folder.name}.npz"


def load_features(folder: str | os.PathLike[str], *, fingerprint: str | None = None) -> ExampleFeatures:
    """The committed features of a run folder, checked against the folder's fingerprint.

    Raises:
        ValueError: If the file is missing or damaged, or was computed for another configuration.
    """
    folder = Path(folder)
    path = features_path(folder)
    feats = ExampleFeatures.load(path)
    if fingerprint is None:
        fingerprint = json.loads((folder / "config.json").read_text())["fingerprint"]
    if feats.meta.get("fingerprint") != fingerprint:
        raise ValueError(
            f"{path}: computed for configuration {feats.meta.get('fingerprint')}, but {folder} is {fingerprint}; "
            f"recompute with `python -m simflib features {folder}`"
        )
    return feats


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simflib features``: gradient products and text embeddings of a collected folder's examples."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m simflib features", description=main.__doc__)
    parser.add_argument("folder", help="a collected run folder, e.g. data/runs/boolq-minilm-ia3")
    parser.add_argument("--out", help="output file (default data/features/<folder name>.npz)")
    parser.add_argument("--device", default="cpu", help="where to compute the gradients (default cpu)")
    parser.add_argument("--block", type=int, default=32, help="examples per gradient block (memory)")
    args = parser.parse_args(argv)
    if not (Path(args.folder) / "config.json").is_file():
        raise ValueError(f"{args.folder}: not a collected run folder (no config.json)")
    setting = Setting.recorded(args.folder, device=args.device)  # the features need the configuration, not the runs
    feats = compute_features(setting, block=args.block)
    out = Path(args.out) if args.out else features_path(args.folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python -m simflib features " + " ".join(argv if argv is not None else sys.argv[1:])
    ExampleFeatures(
        feats.pool_ids,
        feats.test_ids,
        feats.gradient_products,
        feats.pool_text,
        feats.test_text,
        meta={**feats.meta, "command": command},
    ).save(out)
    print(f"{out}: features of {feats.n_train} pool and {len(feats.test_ids)} test examples", file=sys.stderr)
    return 0
