"""Pure functions over arrays: fitting and simulating the linear Markov model, and the metrics."""

from simflib.functional.dynamics import (
    DynamicsFit,
    DynamicsSystem,
    dynamics_system,
    fit_dynamics,
    momentum_counts,
    simulate_dynamics,
    solve_dynamics,
)
from simflib.functional.linear import (
    LinearFit,
    Observations,
    UnidentifiableError,
    batching_matrix,
    fit_linear,
    observation_counts,
    simulate_linear,
)
from simflib.functional.metrics import (
    LDS,
    LDS_RTOL,
    all_steps_lds,
    all_steps_mse,
    final_step_lds,
    final_step_spearman,
    lds_per_example,
    mse_decomposition,
    mse_improvement,
    optimal_rescaling,
)

__all__ = [
    "LDS",
    "LDS_RTOL",
    "DynamicsFit",
    "DynamicsSystem",
    "LinearFit",
    "Observations",
    "UnidentifiableError",
    "all_steps_lds",
    "all_steps_mse",
    "batching_matrix",
    "dynamics_system",
    "final_step_lds",
    "final_step_spearman",
    "fit_dynamics",
    "fit_linear",
    "lds_per_example",
    "momentum_counts",
    "mse_decomposition",
    "mse_improvement",
    "observation_counts",
    "optimal_rescaling",
    "simulate_dynamics",
    "simulate_linear",
    "solve_dynamics",
]
