"""Alembic environment for the marketplace's tables (run by :func:`fedops.market.db.migrate`)."""

from alembic import context

from fedops.market.db import VERSION_TABLE, Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, version_table=VERSION_TABLE,
                  include_name=lambda name, type_, parent: type_ != "table" or name.startswith("market_"),
                  render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
