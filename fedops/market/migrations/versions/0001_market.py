"""The marketplace's first schema: accounts, data sets, tasks, enrollments.

Revision ID: 0001_market
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_market"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "market_accounts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("device", sa.JSON, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_market_accounts_token_hash", "market_accounts", ["token_hash"], unique=True)
    op.create_table(
        "market_datasets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner_id", sa.String(32), sa.ForeignKey("market_accounts.id"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("fingerprint", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("owner_id", "name", name="uq_market_dataset_owner_name"),
    )
    op.create_index("ix_market_datasets_owner_id", "market_datasets", ["owner_id"])
    op.create_table(
        "market_tasks",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("requester_id", sa.String(32), sa.ForeignKey("market_accounts.id"), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("start_at", sa.Float, nullable=True),
        sa.Column("min_owners", sa.Integer, nullable=False),
        sa.Column("max_owners", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("flow_run_ids", sa.JSON, nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
    )
    op.create_index("ix_market_tasks_requester_id", "market_tasks", ["requester_id"])
    op.create_index("ix_market_tasks_state", "market_tasks", ["state"])
    op.create_table(
        "market_enrollments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(32), sa.ForeignKey("market_tasks.id"), nullable=False),
        sa.Column("owner_id", sa.String(32), sa.ForeignKey("market_accounts.id"), nullable=False),
        sa.Column("dataset_id", sa.String(32), sa.ForeignKey("market_datasets.id"), nullable=False),
        sa.Column("training_id", sa.String(64), nullable=False, unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("client_index", sa.Integer, nullable=True),
        sa.Column("joined_at", sa.Float, nullable=False),
        sa.Column("left_at", sa.Float, nullable=True),
        sa.UniqueConstraint("task_id", "owner_id", name="uq_market_enrollment_task_owner"),
    )
    op.create_index("ix_market_enrollments_task_id", "market_enrollments", ["task_id"])
    op.create_index("ix_market_enrollments_owner_id", "market_enrollments", ["owner_id"])


def downgrade() -> None:
    for table in ("market_enrollments", "market_tasks", "market_datasets", "market_accounts"):
        op.drop_table(table)
