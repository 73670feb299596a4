"""Training-run simulators, and the registry the book's tables iterate over.

Every registered simulator is built from the pool size alone (``cls(n_train)``, every other option a keyword with a
default), is fitted by ``fit(runs, val=val_runs)``, choosing its own hyperparameters on the validation runs, and
simulates with ``simulate(curriculum, initial_loss)``. A class attribute ``label`` names it in tables.
"""

from simflib.simulators.base import Simulator, as_observations
from simflib.simulators.linear import L2_GRID, SimfluenceAdditive, SimfluenceLinear, SimfluenceMultiplicative
from simflib.simulators.mean_trajectory import MeanTrajectory, mean_change

SIMULATORS: dict[str, type] = {
    "mean-trajectory": MeanTrajectory,
    "additive": SimfluenceAdditive,
    "multiplicative": SimfluenceMultiplicative,
    "linear": SimfluenceLinear,
}
"""Short name -> simulator class, baseline first, then in the paper's order. New simulators register here."""

BASELINE = "mean-trajectory"
"""The registry name of the curriculum-blind baseline every simulator is judged against."""

__all__ = [
    "BASELINE",
    "L2_GRID",
    "SIMULATORS",
    "MeanTrajectory",
    "SimfluenceAdditive",
    "SimfluenceLinear",
    "SimfluenceMultiplicative",
    "Simulator",
    "as_observations",
    "mean_change",
]
