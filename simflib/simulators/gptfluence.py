"""GPTfluence (Chai et al. 2024): Simfluence's factors predicted from frozen text features.

For training example i, test example j and lag k = 1..K (the order of the Markov model),

    L_t(z_j) = sum_k alpha_k(c_t, z_j) L_{t-k}(z_j) + beta(c_t, z_j),
    alpha_k(c_t, z_j) = sum_{i in c_t} a_k(x_i, x_j),   beta(c_t, z_j) = sum_{i in c_t} b(x_i, x_j),

where x are frozen encoder embeddings of the examples' text (:class:`~simflib.simulators.features.ExampleFeatures`)
and a_k, b are learned. Two heads, as in the authors' code:

* ``"concat"``: an MLP on the concatenation [x_i; x_j] (2d -> 2d -> 100, ReLU after each) and one linear read-out
  per factor;
* ``"dot"``: one MLP (d -> d -> d) per factor applied to both examples, the factor their inner product.

The simulator is trained on all test examples together by one-step teacher forcing (the true L_{t-k} as input) with
Adam on the mean squared error, as the paper describes. Where we differ, for speed on a CPU: every (pool, test)
pair's factors are computed once per optimisation step (the concat MLP's first layer splits into a pool part and a
test part), and each step's mini-batch is every observation of ``tests_per_step`` test examples rather than 128 observations; training stops at the step
with the lowest all-steps MSE on the validation runs (the authors keep the epoch with the lowest validation loss).
Losses before the first step are taken as ``L_0`` for lags reaching before it. Needs torch (imported on ``fit``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from simflib._validation import PAD, as_curriculum
from simflib.functional.metrics import all_steps_mse
from simflib.runs import Run, RunSet
from simflib.simulators.base import as_runs, check_n_train
from simflib.simulators.features import ExampleFeatures


class GPTfluence:
    """GPTfluence's featurized simulator (module docstring), reproduced.

    Args:
        n_train: Size of the training pool n.
        features: Example features with text embeddings of the pool and of every test example to be simulated.
        order: K, the number of past losses each step reads (the paper's n-th order Markov model).
        head: ``"concat"`` or ``"dot"``.
        lr: Adam's learning rate.
        weight_decay: Adam's (decoupled) weight decay (the authors' 1e-5).
        max_steps: Full-batch optimisation steps.
        eval_every: Steps between validation checks (the best check is kept).
        tests_per_step: Test examples drawn (without replacement) for each optimisation step: the mini-batch.
        seed: Seed of the initial weights; training is deterministic given it.

    Attributes (after ``fit``):
        history: list of (step, training MSE, validation all-steps MSE or None).
        best_step: The step whose weights were kept.
    """

    label: ClassVar[str] = "GPTfluence"
    supports_unseen_tests: ClassVar[bool] = True

    def __init__(
        self,
        n_train: int,
        *,
        features: ExampleFeatures | None = None,
        order: int = 1,
        head: Literal["concat", "dot"] = "concat",
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        max_steps: int = 1000,
        eval_every: int = 25,
        tests_per_step: int = 25,
        seed: int = 0,
    ) -> None:
        self.n_train = check_n_train(n_train)
        if head not in ("concat", "dot"):
            raise ValueError(f"head must be 'concat' or 'dot', got {head!r}")
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be a positive integer, got {order!r}")
        if max_steps < 1 or eval_every < 1 or tests_per_step < 1:
            raise ValueError("max_steps, eval_every and tests_per_step must be positive")
        self.tests_per_step = tests_per_step
        self.features, self.order, self.head = features, order, head
        self.lr, self.weight_decay, self.max_steps, self.eval_every, self.seed = (
            lr,
            weight_decay,
            max_steps,
            eval_every,
            seed,
        )
        self.test_ids: list[Any] | None = None
        self.history: list[tuple[int, float, float | None]] = []
        self.best_step: int | None = None
        self._net: Any = None

    def __repr__(self) -> str:
        state = "unfitted" if self._net is None else f"m={len(self.test_ids or [])}, best step {self.best_step}"
        return f"{type(self).__name__}(n_train={self.n_train}, order={self.order}, head={self.head!r}, {state})"

    # Model ------------------------------------------------------------------------------------------------------
    def _build(self, d: int) -> Any:
        import torch
        from torch import nn

        torch.manual_seed(self.seed)
        factors = self.order + 1  # a_1..a_K, then b
        if self.head == "concat":
            first = nn.Linear(2 * d, 2 * d)
            return nn.ModuleDict(
                {
                    "first": first,
                    "second": nn.Linear(2 * d, 100),
                    "heads": nn.Linear(100, factors),
                }
            )
        return nn.ModuleList([nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d)) for _ in range(factors)])

    def _factors(self, net: Any, pool: Any, test: Any) -> Any:
        """(factors, n, m') a_1..a_K and b for every (pool, test) pair."""
        import torch

        if self.head == "concat":
            d = pool.shape[1]
            w, bias = net["first"].weight, net["first"].bias
            h = pool @ w[:, :d].T + bias  # (n, 2d): the pool half of the first layer on [x_i; x_j]
            g = test @ w[:, d:].T  # (m, 2d): the test half
            hidden = torch.relu(h[:, None, :] + g[None, :, :])
            hidden = torch.relu(net["second"](hidden))
            return net["heads"](hidden).permute(2, 0, 1)
        return torch.stack([mlp(pool) @ mlp(test).T for mlp in net])

    # Fit --------------------------------------------------------------------------------------------------------
    def _text(self, runs: RunSet | None, ids: Sequence[Any]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        if self.features is None:
            raise ValueError(
                f"{self.label} needs text features (features=ExampleFeatures with text embeddings); compute them with "
                f"`python -m simflib features <run folder>`"
            )
        if runs is not None:
            self.features.check_pool(self.n_train, runs.meta.get("pool_ids"))
        return self.features.text(ids)

    def _observations(self, runs: Sequence[Run]) -> tuple[Any, Any, Any]:
        """Batch counts (S, n), past losses (K, S, m) and next losses (S, m) of all steps of all runs."""
        import torch

        rows, cols, past, after = [], [], [], []
        offset = 0
        for run in runs:
            T = run.n_steps
            steps, slots = np.nonzero(run.curriculum != PAD)
            rows.append(steps + offset)
            cols.append(run.curriculum[steps, slots])
            padded = np.concatenate([np.repeat(run.losses[:1], self.order - 1, axis=0), run.losses])
            past.append(np.stack([padded[self.order - k : self.order - k + T] for k in range(1, self.order + 1)]))
            after.append(run.losses[1:])
            offset += T
        counts = np.zeros((offset, self.n_train), dtype=np.float32)
        np.add.at(counts, (np.concatenate(rows), np.concatenate(cols)), 1.0)
        return (
            torch.from_numpy(counts),
            torch.from_numpy(np.concatenate(past, axis=1).astype(np.float32)),
            torch.from_numpy(np.concatenate(after).astype(np.float32)),
        )

    def fit(self, runs: RunSet | Sequence[Run], *, val: RunSet | Sequence[Run] | None = None) -> GPTfluence:
        """Train on one-step teacher forcing over all test examples; keep the weights best on ``val``.

        Args:
            runs: Fit runs.
            val: Validation runs (without them the last step's weights are kept).

        Returns:
            self.
        """
        import copy

        import torch

        data = as_runs(runs, self.n_train)
        self.test_ids = data.test_ids()
        pool_np, test_np = self._text(data, self.test_ids)
        pool, test = torch.tensor(pool_np, dtype=torch.float32), torch.tensor(test_np, dtype=torch.float32)
        counts, past, after = self._observations(list(data))
        net = self._build(pool.shape[1])
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        val_runs = list(val) if val is not None else []
        self.history, best = [], None
        generator = torch.Generator().manual_seed(self.seed)
        m = test.shape[0]
        for step in range(1, self.max_steps + 1):
            cols = torch.randperm(m, generator=generator)[: self.tests_per_step]
            factors = self._factors(net, pool, test[cols])  # (K + 1, n, m_step)
            summed = counts @ factors  # (K + 1, S, m_step)
            pred = (summed[:-1] * past[:, :, cols]).sum(0) + summed[-1]
            loss = ((pred - after[:, cols]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % self.eval_every == 0 or step == self.max_steps:
                self._net = net
                score = None
                if val_runs:
                    with torch.no_grad():
                        score = float(
                            np.mean(
                                [all_steps_mse(self.simulate(r.curriculum, r.initial_loss), r.losses) for r in val_runs]
                            )
                        )
                self.history.append((step, float(loss.detach()), score))
                key = score if score is not None else -step
                if not np.isfinite(key):
                    continue
                if best is None or key < best[0]:
                    best = (key, step, copy.deepcopy(net.state_dict()))
        if best is None:
            raise ValueError(f"{self.label}: training diverged (no finite validation MSE); lower lr")
        net.load_state_dict(best[2])
        self._net, self.best_step = net, best[1]
        return self

    # Simulate ---------------------------------------------------------------------------------------------------
    def simulate(
        self, curriculum: ArrayLike, initial_loss: ArrayLike, *, test_ids: Sequence[Any] | None = None
    ) -> NDArray[np.float64]:
        """Roll the model forward from the initial losses (its own predictions as past losses).

        Args:
            curriculum: (T, b) or (K, T, b).
            initial_loss: (m',) or (K, m').
            test_ids: Ids of the m' test examples when they are not the fitted ones in order; any test example
                with text features can be simulated.

        Returns:
            (T + 1, m') or (K, T + 1, m').
        """
        import torch

        if self._net is None or self.test_ids is None:
            raise ValueError(f"{self.label} is not fitted yet: call fit(runs) first")
        curr = as_curriculum(curriculum, n_train=self.n_train)
        start = np.asarray(initial_loss, dtype=np.float64)
        ids = self.test_ids if test_ids is None else list(test_ids)
        if start.shape[-1] != len(ids):
            raise ValueError(
                f"initial_loss has {start.shape[-1]} test examples but {len(ids)} are named"
                + ("" if test_ids is not None else " (fitted); pass test_ids to simulate others")
            )
        pool, test = self._text(None, ids)
        with torch.no_grad():
            pool_t, test_t = (torch.tensor(x, dtype=torch.float32) for x in (pool, test))
            factors = self._factors(self._net, pool_t, test_t).double().numpy()
        flat = curr.reshape(-1, *curr.shape[-2:])
        starts = start.reshape(-1, start.shape[-1])
        if len(starts) != len(flat):
            raise ValueError(f"initial_loss has shape {start.shape}; want {(*curr.shape[:-2], len(ids))}")
        out = np.empty((len(flat), flat.shape[1] + 1, len(ids)))
        table = factors.transpose(1, 0, 2).reshape(self.n_train, -1)  # (n, (K + 1) m'), a zero row for padding
        padded = np.vstack([table, np.zeros((1, table.shape[1]))])
        for k, (c, l0) in enumerate(zip(flat, starts)):
            summed = padded[np.where(c == PAD, self.n_train, c)].sum(axis=1).reshape(len(c), self.order + 1, len(ids))
            history = [l0] * self.order
            out[k, 0] = l0
            for t in range(len(c)):
                nxt = sum(summed[t, q] * history[-1 - q] for q in range(self.order)) + summed[t, -1]
                history.append(nxt)
                out[k, t + 1] = nxt
        return out.reshape(*curr.shape[:-2], flat.shape[1] + 1, len(ids))
