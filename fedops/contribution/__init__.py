"""Contribution scoring: how much each client's update is worth to a round's model.

A round's coalition game: ``v(S)`` is the utility (e.g. validation accuracy) of the model built from
the updates of the clients in ``S`` (reconstruction, no retraining). Estimators (a registry, named
in config by key) turn ``v`` into one value per client: leave-one-out, exact Shapley, TMC-Shapley
and GTG-Shapley. Pure functions of ``v`` and an explicit random generator; the number of distinct
coalitions evaluated is the portable cost.
"""

from fedops.contribution.estimators import (
    ESTIMATORS,
    ContributionResult,
    Estimator,
    ExactShapley,
    GTGShapley,
    LeaveOneOut,
    TMCShapley,
    Utility,
)

__all__ = ["ESTIMATORS", "ContributionResult", "Estimator", "ExactShapley", "GTGShapley", "LeaveOneOut",
           "TMCShapley", "Utility"]
