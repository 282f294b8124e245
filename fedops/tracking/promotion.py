"""Which registered version holds the ``current`` alias: a new version takes it only when it is
not worse than the version holding it, on the same test set, by more than ``tracking.promote_margin``
(accuracy, as a fraction). Either way the decision and its numbers are tagged on the new version
and on its run, so a version left without the alias says why.

Each decided version also records its test accuracy and the test set's digest as version tags
(``fedops.test_accuracy``, ``fedops.test_set_sha256``): a later decision on the same test set reads
the holder's accuracy from them instead of loading and evaluating its model again. A holder
without them, or recorded on another test set, is loaded and evaluated the way a user loads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

ALIAS = "current"
ACCURACY_TAG = "fedops.test_accuracy"
TEST_SET_TAG = "fedops.test_set_sha256"


def dataset_digest(x: np.ndarray, y: np.ndarray) -> str:
    """sha256 of a data set's inputs and labels (their dtypes and shapes included)."""
    import hashlib

    h = hashlib.sha256()
    for a in (np.ascontiguousarray(x), np.ascontiguousarray(y)):
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def recorded_accuracy(version, test_set: str | None) -> float | None:
    """The accuracy a model version's tags record for ``test_set``; None if they record none for it."""
    tags = getattr(version, "tags", None) or {}
    if test_set is None or tags.get(TEST_SET_TAG) != test_set or ACCURACY_TAG not in tags:
        return None
    try:
        return float(tags[ACCURACY_TAG])
    except ValueError:
        return None


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
           withhold: str | None = None, test_set: str | None = None, accuracy: float | None = None) -> Promotion:
    """Compare ``version`` of ``name`` with the alias holder and move the alias if it qualifies;
    ``withhold`` (a reason, e.g. failed fairness checks) keeps the alias where it is.

    ``accuracy``: the new version's test accuracy when the caller has measured it on the test set
    whose digest is ``test_set`` (a run's final evaluation of the very parameters it logged);
    otherwise ``accuracy_of`` loads and evaluates it. The holder's accuracy comes from its tags when
    they record ``test_set``, else from ``accuracy_of``."""
    from mlflow.exceptions import MlflowException

    new = float(accuracy) if accuracy is not None else accuracy_of(f"models:/{name}/{version}")
    if test_set is not None:
        client.set_model_version_tag(name, str(version), TEST_SET_TAG, test_set)
        client.set_model_version_tag(name, str(version), ACCURACY_TAG, repr(new))
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
            old = recorded_accuracy(holder, test_set)
            if old is None:
                old = accuracy_of(f"models:/{name}/{holder.version}")
                if test_set is not None:  # the next decision on this test set reads it from the tags
                    client.set_model_version_tag(name, str(holder.version), TEST_SET_TAG, test_set)
                    client.set_model_version_tag(name, str(holder.version), ACCURACY_TAG, repr(old))
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
