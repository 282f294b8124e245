"""Fairness: client-level and group metrics (:mod:`.metrics`), FairFed's weights (:mod:`.fairfed`),
the round's fairness step (:mod:`.step`), the checks that gate a model (:mod:`.checks`) and the
per-run report (:mod:`.report`). q-FFL and FairFed's rule are aggregators in :mod:`fedops.aggregate`."""
