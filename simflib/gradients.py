"""Per-example gradients of the trainable parameters, for TracIn-CP and influence functions (§4.2-4.3).

``per_example_gradients`` vmaps ``torch.func.grad`` over examples (chunked to bound memory) and falls back to a
Python loop over examples where vmap cannot run. Gradients are taken with respect to the parameters that train
(adapters and head under PEFT, everything under full tuning), flattened in ``named_parameters`` order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import torch
from torch import nn

from simflib.models import Encoded, per_example_loss


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters that require gradients, in ``named_parameters`` order."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def _example_loss(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    frozen: Mapping[str, torch.Tensor],
    inputs: Mapping[str, torch.Tensor],
    label: torch.Tensor,
) -> torch.Tensor:
    batched = {k: v.unsqueeze(0) for k, v in inputs.items()}
    logits = torch.func.functional_call(model, {**frozen, **params}, args=(), kwargs={**batched, "prebuilt_mask": True})
    return per_example_loss(logits, label.unsqueeze(0))[0]


def per_example_gradients(
    model: nn.Module,
    data: Encoded,
    index: torch.Tensor | None = None,
    *,
    chunk_size: int = 16,
    method: Literal["auto", "vmap", "loop"] = "auto",
) -> torch.Tensor:
    """Gradients of each example's loss with respect to the trainable parameters.

    Args:
        model: The model, in the state (checkpoint) to differentiate at.
        data: Encoded examples.
        index: Which examples (default: all).
        chunk_size: Examples vmapped together (memory grows linearly with it).
        method: ``"vmap"`` (torch.func), ``"loop"`` (one backward pass per example), or ``"auto"`` (vmap, falling
            back to the loop if vmap fails on this model).

    Returns:
        (N, P) float32 gradients, P the number of trainable parameters.

    Raises:
        ValueError: If the model has no trainable parameter, or a gradient is not finite (naming the example).
    """
    names = trainable_names(model)
    if not names:
        raise ValueError("per_example_gradients: the model has no trainable parameters")
    idx = torch.arange(len(data)) if index is None else torch.as_tensor(index)
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    frozen.update(dict(model.named_buffers()))
    was_training = model.training
    model.eval()
    try:
        if method in ("auto", "vmap"):
            try:
                out = _vmap_gradients(model, params, frozen, data, idx, chunk_size)
            except Exception:
                if method == "vmap":
                    raise
                out = _loop_gradients(model, data, idx, names)
        else:
            out = _loop_gradients(model, data, idx, names)
    finally:
        model.train(was_training)
    bad = ~torch.isfinite(out).all(dim=1)
    if bad.any():
        raise ValueError(f"per_example_gradients: non-finite gradient for example {int(idx[bad.nonzero()[0, 0]])}")
    return out


def _vmap_gradients(model, params, frozen, data, idx, chunk_size) -> torch.Tensor:  # type: ignore[no-untyped-def]
    grad_fn = torch.func.grad(lambda p, inputs, label: _example_loss(model, p, frozen, inputs, label))
    per_chunk = []
    for start in range(0, len(idx), chunk_size):
        chunk = idx[start : start + chunk_size]
        inputs = data.select(chunk)
        grads = torch.func.vmap(grad_fn, in_dims=(None, 0, 0))(params, inputs, data.labels[chunk])
        per_chunk.append(torch.cat([grads[n].reshape(len(chunk), -1) for n in params], dim=1).float())
    return torch.cat(per_chunk)


def _loop_gradients(model, data, idx, names) -> torch.Tensor:  # type: ignore[no-untyped-def]
    wanted = [p for n, p in model.named_parameters() if n in set(names)]
    rows = []
    for i in idx.tolist():
        one = torch.tensor([i])
        loss = per_example_loss(model(**data.select(one)), data.labels[one])[0]
        # Parameters the loss does not reach (BERT's pooler under mean pooling) have zero gradient.
        grads = torch.autograd.grad(loss, wanted, allow_unused=True, materialize_grads=True)
        rows.append(torch.cat([g.reshape(-1) for g in grads]).float())
    return torch.stack(rows)


def gradient_products(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    train: Encoded,
    test: Encoded,
    *,
    chunk_size: int = 16,
    gradients: Callable[..., torch.Tensor] = per_example_gradients,
) -> torch.Tensor:
    """``grad L(z_i) . grad L(z_j)`` for every training example i and test example j at one checkpoint.

    The gradients of the n + m examples are computed once and cached for the products (Appendix A.3's argument).

    Args:
        model: The model, evaluated with its trainable parameters set to ``state``; they are restored afterwards.
        state: Trainable parameters at the checkpoint (names as in ``named_parameters``).
        train: The training pool.
        test: The test examples.

    Returns:
        (n, m) products.

    Raises:
        ValueError: If ``state`` does not hold exactly the model's trainable parameters.
    """
    names = set(trainable_names(model))
    if set(state) != names:
        missing, extra = sorted(names - set(state)), sorted(set(state) - names)
        raise ValueError(
            f"checkpoint does not match the trainable parameters (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    saved = {name: p.detach().clone() for name, p in model.named_parameters() if name in state}
    try:
        load_parameters(model, state)
        g_train = gradients(model, train, chunk_size=chunk_size)
        g_test = gradients(model, test, chunk_size=chunk_size)
    finally:
        load_parameters(model, saved)
    return g_train @ g_test.T


def load_parameters(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state`` (a subset of ``named_parameters``) into the model's parameters, in place."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in state:
                p.copy_(torch.as_tensor(state[name]))
