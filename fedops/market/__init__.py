"""The marketplace (CrowdFL's task listing and participation): requesters publish training tasks,
data owners register devices and data-set fingerprints, join, earn points and reputation. A REST
API and a server-rendered web app over SQLAlchemy models in the reputation ledger's database; tasks
run as Prefect deployments and their results are read from MLflow.

Modules: :mod:`~fedops.market.db` (models, migrations), :mod:`~fedops.market.schemas` (API
models), :mod:`~fedops.market.eligibility`, :mod:`~fedops.market.service` (the rules),
:mod:`~fedops.market.launcher` (Prefect), :mod:`~fedops.market.results` (Prefect, MLflow, ledger),
:mod:`~fedops.market.app` (FastAPI), :mod:`~fedops.market.client` and :mod:`~fedops.market.owner`
(the owner's side), :mod:`~fedops.market.demo`.
"""
