"""Training-run simulators, and the registry the book's tables iterate over.

Every registered simulator is built from the pool size alone (``cls(n_train)``, every other option a keyword with a
default), is fitted by ``fit(runs, val=val_runs)``, choosing its own hyperparameters on the validation runs, and
simulates with ``simulate(curriculum, initial_loss)``. A class attribute ``label`` names it in tables.
"""

from simflib.simulators.base import Simulator, as_observations
from simflib.simulators.dynamics import DYNAMICS_L2_GRID, MOMENTUM_GRID, SimfluenceTE, SimfluenceTEGrad
from simflib.simulators.features import ExampleFeatures
from simflib.simulators.gptfluence import GPTfluence
from simflib.simulators.linear import L2_GRID, SimfluenceAdditive, SimfluenceLinear, SimfluenceMultiplicative
from simflib.simulators.mean_trajectory import MeanTrajectory, mean_change
from simflib.simulators.metric import SPACES, OnMetric

SIMULATORS: dict[str, type] = {
    "mean-trajectory": MeanTrajectory,
    "additive": SimfluenceAdditive,
    "multiplicative": SimfluenceMultiplicative,
    "linear": SimfluenceLinear,
    "time-effects": SimfluenceTE,
    "gradient-prior": SimfluenceTEGrad,
    "gptfluence": GPTfluence,
}
"""Each simulator class by its short name, the baseline first, then the paper's three, then ours
(:class:`simflib.SimfluenceTE`, :class:`simflib.SimfluenceTEGrad`, :class:`simflib.GPTfluence`). New simulators
register here. Options a simulator needs beyond the pool size (``features=`` for the featurized ones) reach it by name
through :mod:`simflib.experiments`."""

PAPER = ("mean-trajectory", "additive", "multiplicative", "linear")
"""The registry names of the curriculum-blind baseline and the paper's three simulators, the rows of the chapters that
reproduce the paper."""

BASELINE = "mean-trajectory"
"""The registry name of the curriculum-blind baseline every simulator is judged against."""

__all__ = [
    "BASELINE",
    "DYNAMICS_L2_GRID",
    "L2_GRID",
    "MOMENTUM_GRID",
    "PAPER",
    "SIMULATORS",
    "SPACES",
    "ExampleFeatures",
    "GPTfluence",
    "MeanTrajectory",
    "OnMetric",
    "SimfluenceAdditive",
    "SimfluenceLinear",
    "SimfluenceMultiplicative",
    "SimfluenceTE",
    "SimfluenceTEGrad",
    "Simulator",
    "as_observations",
    "mean_change",
]
