"""quantum allocations, usage and results

Revision ID: 0006_quantum
Revises: 0005_data
Create Date: 2026-11-22 06:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_quantum"
down_revision = "0005_data"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quantum_allocations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("qpu_shots", sa.BigInteger(), nullable=False),
        sa.Column("qpu_seconds", sa.Float(), nullable=False),
        sa.Column("starts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "quantum_usage",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("qpu_shots", sa.BigInteger(), nullable=False),
        sa.Column("qpu_seconds", sa.Float(), nullable=False),
        sa.Column("eur", sa.Float(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "attempt", name="uq_quantum_usage_job_attempt"),
    )
    op.create_index(
        "ix_quantum_usage_project_at", "quantum_usage", ["project_id", "at"], unique=False
    )
    op.create_table(
        "quantum_results",
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id"),
    )


def downgrade() -> None:
    op.drop_table("quantum_results")
    op.drop_index("ix_quantum_usage_project_at", table_name="quantum_usage")
    op.drop_table("quantum_usage")
    op.drop_table("quantum_allocations")
