"""Which registered version holds the ``current`` alias: a new version takes it only when it is
not worse than the version holding it, on the same test set, by more than ``tracking.promote_margin``
(accuracy, as a fraction). Either way the decision and its numbers are tagged on the new version
and on its run, so a version left without the alias says why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

ALIAS = "current"


@dataclass(frozen=True)
class Promotion:
    promoted: bool
    reason: str
    accuracy: float
    previous_version: str | None = None
    previous_accuracy: float | None = None


def model_accuracy(model_uri: str, x: np.ndarray, y: np.ndarray, *, batch: int = 1024) -> float:
    """Test accuracy of a logged model (loaded the way a user loads it)."""
    import mlflow.pytorch
    import torch

    model = mlflow.pytorch.load_model(model_uri, map_location="cpu")  # exported in eval mode
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            logits = model(torch.as_tensor(x[i : i + batch]))
            correct += int((logits.argmax(1).cpu().numpy() == y[i : i + batch]).sum())
    return correct / len(x)


def decide(client, *, name: str, version: str, margin: float, accuracy_of: Callable[[str], float],
           withhold: str | None = None) -> Promotion:
    """Compare ``version`` of ``name`` with the alias holder and move the alias if it qualifies;
    ``withhold`` (a reason, e.g. failed fairness checks) keeps the alias where it is."""
    from mlflow.exceptions import MlflowException

    new = accuracy_of(f"models:/{name}/{version}")
    if withhold is not None:
        decision = Promotion(False, f"not promoted: {withhold}", new)
        client.set_model_version_tag(name, str(version), "fedops.promotion", decision.reason)
        return decision
    try:
        holder = client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        holder = None
    if holder is None:
        decision = Promotion(True, f"promoted: first version with the alias (test accuracy {new:.4f})", new)
    elif str(holder.version) == str(version):
        decision = Promotion(True, f"already holds the alias (test accuracy {new:.4f})", new)
    else:
        try:
            old = accuracy_of(f"models:/{name}/{holder.version}")
        except Exception as exc:  # another data set or architecture under the same name
            decision = Promotion(False, (
                f"not promoted: version {holder.version}, which holds '{ALIAS}', cannot be evaluated on this run's "
                f"test set ({type(exc).__name__}: {str(exc)[:200]})"), new, str(holder.version))
        else:
            if new >= old - margin:
                decision = Promotion(True, (f"promoted: test accuracy {new:.4f} against {old:.4f} for version "
                                            f"{holder.version} on the same test set (margin {margin:g})"),
                                     new, str(holder.version), old)
            else:
                decision = Promotion(False, (
                    f"not promoted: test accuracy {new:.4f} is {old - new:.4f} below version {holder.version}'s "
                    f"{old:.4f} on the same test set (margin {margin:g}); '{ALIAS}' stays on version {holder.version}"),
                    new, str(holder.version), old)
    if decision.promoted:
        client.set_registered_model_alias(name, ALIAS, str(version))
    client.set_model_version_tag(name, str(version), "fedops.promotion", decision.reason)
    return decision
