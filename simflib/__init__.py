"""simflib: training-run simulation for training data attribution (Simfluence, Guu et al. 2023)."""

from simflib import curriculum, functional, metrics, synthetic
from simflib.functional.linear import Observations, UnidentifiableError
from simflib.metrics import evaluate, summarize
from simflib.runs import PAPER_SPLIT, Run, RunSet
from simflib.simulators import (
    BASELINE,
    SIMULATORS,
    ExampleFeatures,
    GPTfluence,
    MeanTrajectory,
    SimfluenceAdditive,
    SimfluenceLinear,
    SimfluenceMultiplicative,
    SimfluenceTE,
    SimfluenceTEGrad,
    Simulator,
)

__version__ = "0.1.0"

__all__ = [
    "BASELINE",
    "PAPER_SPLIT",
    "SIMULATORS",
    "ExampleFeatures",
    "GPTfluence",
    "MeanTrajectory",
    "Observations",
    "Run",
    "RunSet",
    "SimfluenceAdditive",
    "SimfluenceLinear",
    "SimfluenceMultiplicative",
    "SimfluenceTE",
    "SimfluenceTEGrad",
    "Simulator",
    "UnidentifiableError",
    "__version__",
    "curriculum",
    "evaluate",
    "functional",
    "metrics",
    "summarize",
    "synthetic",
]
