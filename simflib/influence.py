"""Influence functions (Koh & Liang 2017) as second-order hypothetical losses (§4.3, Eq. 12).

At the final parameters theta_T, a Newton step on training example z_i would change the loss of test example z_j
by about ``-grad L(z_i)^T (H + delta I)^{-1} grad L(z_j)``, with H the Hessian of the mean training loss over the
pool and delta a damping term. These reductions, fed to :class:`simflib.baselines.HypotheticalSums` with one
checkpoint, make influence functions a Simfluence-Additive simulator.

The parameters can be any subset of the model's (``names``). Two solvers:

* ``"exact"``: the Hessian itself (``torch.func.hessian``), then a dense solve. Affordable for a few thousand
  parameters, for example the scoring head on frozen features (:class:`FrozenFeatures`);
* ``"cg"``: conjugate gradients on Hessian-vector products (forward-over-reverse), never forming H, for adapter
  parameter sets. Each iteration costs about three passes over the pool per right-hand side.

The math is written against a plain function of a flat parameter vector; :func:`model_objective` builds such
functions for a module, its inputs and labels.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from simflib.models import ChoiceModel, Encoded, per_example_loss

Solver = Literal["exact", "cg"]


@dataclass(frozen=True)
class Objective:
    """A model's parameters ``names`` as one flat vector, with the training loss and per-example gradients.

    Attributes:
        names: Parameter names, in order.
        shapes: Their shapes.
        x0: (P,) flat parameters at which everything is evaluated.
        loss: Flat parameters -> mean cross-entropy over the training examples (scalar).
        gradients: (flat parameters, which inputs) -> (N, P) per-example gradients of those inputs.
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    x0: torch.Tensor
    loss: Callable[[torch.Tensor], torch.Tensor]
    gradients: Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]


def model_objective(
    module: nn.Module,
    names: Sequence[str],
    train_inputs: Mapping[str, torch.Tensor],
    train_labels: torch.Tensor,
    *,
    call_kwargs: Mapping[str, object] | None = None,
    chunk_size: int = 32,
) -> Objective:
    """The objective of ``module`` in its parameters ``names``, the others held fixed.

    Args:
        module: Returns logits (N, K), or token logits (N, L, V), from ``module(**inputs, **call_kwargs)``.
        names: Parameters to differentiate (e.g. the head's, or all adapters').
        train_inputs: Inputs of the N training examples (tensors with N leading).
        train_labels: (N,) labels, or (N, L) token labels (see :func:`simflib.models.per_example_loss`).
        call_kwargs: Extra keyword arguments for every call (e.g. ``prebuilt_mask=True`` for a ChoiceModel).
        chunk_size: Examples per vmapped chunk for per-example gradients.
    """
    named = dict(module.named_parameters())
    unknown = [n for n in names if n not in named]
    if unknown or not names:
        raise ValueError(f"model_objective: unknown or no parameter names {unknown[:3]}")
    fixed = {k: v.detach() for k, v in named.items() if k not in names}
    fixed.update(dict(module.named_buffers()))
    shapes = tuple(named[n].shape for n in names)
    x0 = torch.cat([named[n].detach().reshape(-1) for n in names]).double()
    kwargs = dict(call_kwargs or {})
    dtype = named[names[0]].dtype

    def unflatten(flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for name, shape in zip(names, shapes):
            out[name] = flat[start : start + shape.numel()].reshape(shape).to(dtype)
            start += shape.numel()
        return out

    def logits(flat: torch.Tensor, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        params = {**fixed, **unflatten(flat)}
        return torch.func.functional_call(module, params, args=(), kwargs={**inputs, **kwargs}).double()

    def loss(flat: torch.Tensor) -> torch.Tensor:
        return per_example_loss(logits(flat, train_inputs), train_labels).mean()

    def one(flat: torch.Tensor, inputs: Mapping[str, torch.Tensor], label: torch.Tensor) -> torch.Tensor:
        batched = {k: v.unsqueeze(0) for k, v in inputs.items()}
        return per_example_loss(logits(flat, batched), label.unsqueeze(0))[0]

    grad_one = torch.func.grad(one)

    def gradients(inputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        rows = []
        for start in range(0, labels.shape[0], chunk_size):
            part = {k: v[start : start + chunk_size] for k, v in inputs.items()}
            rows.append(torch.func.vmap(grad_one, in_dims=(None, 0, 0))(x0, part, labels[start : start + chunk_size]))
        out = torch.cat(rows)
        bad = ~torch.isfinite(out).all(dim=1)
        if bad.any():
            raise ValueError(f"non-finite gradient for example {int(bad.nonzero()[0, 0])}")
        return out

    module.eval()
    return Objective(tuple(names), shapes, x0, loss, gradients)


@contextlib.contextmanager
def _quiet_forward_ad() -> Iterator[None]:
    """torch's forward-mode AD warns, from inside torch, that ``torch.jit.script`` is deprecated (torch 2.13)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=DeprecationWarning)
        yield


def hessian(objective: Objective) -> torch.Tensor:
    """(P, P) exact Hessian of the training loss at ``objective.x0`` (float64)."""
    with _quiet_forward_ad():
        return torch.func.hessian(objective.loss)(objective.x0)


def hessian_vector_product(objective: Objective) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> H v`` by forward-over-reverse differentiation; ``v`` of shape (P,) or (P, k)."""
    grad = torch.func.grad(objective.loss)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        with _quiet_forward_ad():
            return torch.func.jvp(grad, (objective.x0,), (v,))[1]

    def batched(v: torch.Tensor) -> torch.Tensor:
        return hvp(v) if v.ndim == 1 else torch.func.vmap(hvp, in_dims=1, out_dims=1)(v)

    return batched


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, *, tol: float = 1e-10, max_iter: int = 1000
) -> tuple[torch.Tensor, int]:
    """Solve ``M X = rhs`` for symmetric positive definite M, every column at once.

    Args:
        matvec: ``(P, k) -> (P, k)`` product with M.
        rhs: (P, k) right-hand sides.
        tol: Stop when every column's residual norm is below ``tol`` times its right-hand side's.
        max_iter: Iteration limit.

    Returns:
        (P, k) solution and the iterations used.

    Raises:
        ValueError: If a curvature ``p^T M p`` is not positive (M not positive definite: raise the damping), or
            the iteration does not converge.
    """
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rs = (r * r).sum(0)
    target = tol**2 * rs.clamp(min=torch.finfo(rhs.dtype).tiny)
    for it in range(1, max_iter + 1):
        mp = matvec(p)
        curvature = (p * mp).sum(0)
        active = rs > target
        if (curvature[active] <= 0).any():
            raise ValueError("conjugate_gradient: the damped Hessian is not positive definite; increase damping")
        step = torch.where(active, rs / torch.where(active, curvature, 1.0), 0.0)
        x += step * p
        r -= step * mp
        new = (r * r).sum(0)
        if (new <= target).all():
            return x, it
        p = r + torch.where(active, new / rs.clamp(min=torch.finfo(rhs.dtype).tiny), 0.0) * p
        rs = new
    raise ValueError(f"conjugate_gradient: no convergence in {max_iter} iterations (residual {float(rs.max()):.2e})")


def influence_reductions(
    objective: Objective,
    train: tuple[Mapping[str, torch.Tensor], torch.Tensor],
    test: tuple[Mapping[str, torch.Tensor], torch.Tensor],
    *,
    damping: float,
    solver: Solver = "exact",
    tol: float = 1e-10,
    max_iter: int = 1000,
    hessian_matrix: torch.Tensor | None = None,
) -> torch.Tensor:
    """Second-order hypothetical reductions ``grad L(z_i)^T (H + delta I)^{-1} grad L(z_j)`` (Eq. 12).

    Args:
        objective: From :func:`model_objective` (H is the Hessian of its training loss).
        train: (inputs, labels) of the n training examples.
        test: (inputs, labels) of the m test examples.
        damping: delta >= 0 added to H's diagonal.
        solver: ``"exact"`` or ``"cg"``.
        tol: Relative residual of CG.
        max_iter: CG iteration limit.
        hessian_matrix: A precomputed (P, P) :func:`hessian` of ``objective`` for the exact solver (to try several
            dampings at the cost of one Hessian).

    Returns:
        (n, m) float64 reductions; influence scores (Koh & Liang's sign) are their negatives.

    Raises:
        ValueError: On negative damping, an unknown solver, a singular or indefinite damped Hessian.
    """
    if not damping >= 0:
        raise ValueError(f"damping must be >= 0, got {damping}")
    g_train = objective.gradients(*train)
    g_test = objective.gradients(*test)
    if solver == "exact":
        H = hessian(objective) if hessian_matrix is None else hessian_matrix
        damped = H + damping * torch.eye(H.shape[0], dtype=H.dtype)
        solved, info = torch.linalg.solve_ex(damped, g_test.T)
        if int(info) != 0 or not torch.isfinite(solved).all():
            raise ValueError("influence_reductions: the damped Hessian is singular; increase damping")
    elif solver == "cg":
        hvp = hessian_vector_product(objective)
        solved, _ = conjugate_gradient(lambda v: hvp(v) + damping * v, g_test.T, tol=tol, max_iter=max_iter)
    else:
        raise ValueError(f"unknown solver {solver!r}; use 'exact' or 'cg'")
    return g_train @ solved


class FrozenFeatures(nn.Module):
    """A :class:`~simflib.models.ChoiceModel`'s head on precomputed pooled features: a logistic model.

    Its parameters are the head's, named ``head.weight`` and ``head.bias``. Use :meth:`features` to pool a
    model's encoder outputs once; influence on the head alone then costs nothing per Hessian-vector product but
    a matrix product.
    """

    def __init__(self, model: ChoiceModel) -> None:
        super().__init__()
        self.head = model.head
        self.mode = model.mode

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from (N, H) (classification) or (N, k, H) (multiple choice) features."""
        scores = self.head(features)
        return scores if self.mode == "classification" else scores.squeeze(-1)

    @staticmethod
    def features(model: ChoiceModel, data: Encoded, *, batch_size: int = 32) -> torch.Tensor:
        """Pooled encoder outputs, the head's inputs: (N, H) or (N, k, H)."""
        captured: list[torch.Tensor] = []
        hook = model.head.register_forward_hook(lambda mod, args, out: captured.append(args[0].detach()))
        try:
            with torch.no_grad():
                for start in range(0, len(data), batch_size):
                    index = torch.arange(start, min(start + batch_size, len(data)))
                    model(**data.select(index))
        finally:
            hook.remove()
        pooled = torch.cat(captured)
        return pooled if model.mode == "classification" else pooled.reshape(len(data), -1, pooled.shape[-1])


class _Examples(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> None:
        self.inputs, self.labels = dict(inputs), labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return {k: v[i] for k, v in self.inputs.items()}, self.labels[i]


def ekfac_reductions(
    module: nn.Module,
    train: tuple[Mapping[str, torch.Tensor], torch.Tensor],
    test: tuple[Mapping[str, torch.Tensor], torch.Tensor],
    *,
    damping: float | None,
    tracked_modules: Sequence[str] | None = None,
    call_kwargs: Mapping[str, object] | None = None,
    output_dir: str,
    batch_size: int = 16,
    seed: int = 0,
) -> torch.Tensor:
    """Second-order reductions with the Hessian replaced by kronfluence's EK-FAC approximation of the Fisher.

    For full-model tuning, where no exact Hessian or CG solve is affordable. kronfluence (Grosse et al. 2023)
    factors the Fisher of each tracked ``nn.Linear`` into Kronecker factors with eigenvalue corrections, and
    preconditions per-example gradients with it; the scores here are its pairwise scores, laid out as
    :func:`influence_reductions` lays out its own.

    Args:
        module: Returns logits from ``module(**inputs, **call_kwargs)``.
        train: (inputs, labels) of the n training examples.
        test: (inputs, labels) of the m test examples.
        damping: Added to the approximate Fisher (kronfluence's ``damping_factor``); None lets kronfluence choose
            a tenth of the mean eigenvalue, a scale-free choice for models whose Fisher scale is unknown.
        tracked_modules: Names of the ``nn.Linear`` modules whose weights count (default: every trainable
            ``nn.Linear`` the loss depends on; one it does not, like BERT's pooler under mean pooling, would have
            no gradient statistics).
        call_kwargs: Extra keyword arguments for each call.
        output_dir: Folder for kronfluence's factors and scores.
        batch_size: Examples per batch.
        seed: Seeds the labels sampled from the model for the true Fisher.

    Returns:
        (n, m) float64 reductions.
    """
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.task import Task

    if train[1].dim() != 1 or test[1].dim() != 1:
        raise ValueError(
            "ekfac_reductions: needs option labels (N,) of a choice model; token labels (a language "
            "model's answers) are not supported"
        )
    kwargs = dict(call_kwargs or {})
    tracked = list(tracked_modules) if tracked_modules is not None else _used_linear_modules(module, train, kwargs)

    class ChoiceTask(Task):  # type: ignore[misc]
        def compute_train_loss(self, batch, model, sample=False):  # type: ignore[no-untyped-def]
            inputs, labels = batch
            logits = model(**inputs, **kwargs)
            if sample:  # the true Fisher: labels drawn from the model's own predictions
                with torch.no_grad():
                    labels = torch.multinomial(torch.softmax(logits.detach().float(), -1), 1).flatten()
            return nn.functional.cross_entropy(logits, labels, reduction="sum")

        def compute_measurement(self, batch, model):  # type: ignore[no-untyped-def]
            inputs, labels = batch
            return nn.functional.cross_entropy(model(**inputs, **kwargs), labels, reduction="sum")

        def get_influence_tracked_modules(self):  # type: ignore[no-untyped-def]
            return tracked

    task = ChoiceTask()
    prepared = prepare_model(copy.deepcopy(module).eval(), task)  # kronfluence rewrites modules in place
    analyzer = Analyzer(
        "simflib",
        model=prepared,
        task=task,
        cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
        output_dir=output_dir,
        log_level=40,
    )
    train_set, test_set = _Examples(*train), _Examples(*test)
    torch.manual_seed(seed)
    with warnings.catch_warnings():  # kronfluence 1.0.1 builds torch.cuda.amp.GradScaler, deprecated in torch
        warnings.filterwarnings("ignore", message=r"`torch.cuda.amp.GradScaler", category=FutureWarning)
        _ekfac_scores(analyzer, train_set, test_set, batch_size, damping)
    scores = analyzer.load_pairwise_scores("scores")["all_modules"]  # (m, n)
    return scores.double().T.contiguous()


def _used_linear_modules(
    module: nn.Module, train: tuple[Mapping[str, torch.Tensor], torch.Tensor], kwargs: Mapping[str, object]
) -> list[str]:
    """Names of the trainable ``nn.Linear`` modules that the loss of the first training example depends on."""
    linear = [
        (name, sub) for name, sub in module.named_modules() if isinstance(sub, nn.Linear) and sub.weight.requires_grad
    ]
    inputs, labels = train
    logits = module(**{k: v[:1] for k, v in inputs.items()}, **kwargs)
    loss = nn.functional.cross_entropy(logits, labels[:1])
    grads = torch.autograd.grad(loss, [sub.weight for _, sub in linear], allow_unused=True)
    return [name for (name, _), grad in zip(linear, grads) if grad is not None]


def _ekfac_scores(analyzer, train_set, test_set, batch_size: int, damping: float | None) -> None:  # type: ignore[no-untyped-def]
    from kronfluence.arguments import FactorArguments, ScoreArguments

    analyzer.fit_all_factors(
        "ekfac",
        dataset=train_set,
        per_device_batch_size=batch_size,
        factor_args=FactorArguments(strategy="ekfac"),
        overwrite_output_dir=True,
    )
    analyzer.compute_pairwise_scores(
        "scores",
        "ekfac",
        query_dataset=test_set,
        train_dataset=train_set,
        per_device_query_batch_size=batch_size,
        per_device_train_batch_size=batch_size,
        score_args=ScoreArguments(damping_factor=damping),
        overwrite_output_dir=True,
    )
