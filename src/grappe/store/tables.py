"""The database schema, as SQLAlchemy 2 ORM tables. Changes go through Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite keeps no time zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]


class TokenRow(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class ProjectRow(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]


class MemberRow(Base):
    __tablename__ = "project_members"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )


class AllocationRow(Base):
    __tablename__ = "allocations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    gpu_hours: Mapped[float] = mapped_column(Float)
    cpu_hours: Mapped[float] = mapped_column(Float)
    starts: Mapped[datetime]
    ends: Mapped[datetime]
    created_at: Mapped[datetime]


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner_id", "client_request_id", name="uq_jobs_owner_request"),
        Index("ix_jobs_state", "state"),
        Index("ix_jobs_project_state", "project_id", "state"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    client_request_id: Mapped[str | None] = mapped_column(String(128))
    spec: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    site: Mapped[str | None] = mapped_column(String(64))
    pool: Mapped[str | None] = mapped_column(String(64))
    handle: Mapped[str | None] = mapped_column(String(256))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    cpus: Mapped[int] = mapped_column(Integer, default=1)
    memory_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    max_runtime_s: Mapped[int] = mapped_column(Integer)
    workdir_upload: Mapped[str | None] = mapped_column(String(64))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    placement: Mapped[dict[str, Any] | None]
    submitted_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    cancel_reason: Mapped[str | None] = mapped_column(Text)


class JobEventRow(Base):
    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job", "job_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text, default="")
    site: Mapped[str | None] = mapped_column(String(64))


class UsageRow(Base):
    """One charge to a project: an attempt of a job that held resources, measured when it ended."""

    __tablename__ = "usage"
    __table_args__ = (
        UniqueConstraint("job_id", "attempt", name="uq_usage_job_attempt"),
        Index("ix_usage_project_at", "project_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    site: Mapped[str] = mapped_column(String(64))
    gpu_hours: Mapped[float] = mapped_column(Float)
    cpu_hours: Mapped[float] = mapped_column(Float)
    eur: Mapped[float] = mapped_column(Float)
    kg_co2: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime]


class AuditRow(Base):
    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(128), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class UploadRow(Base):
    """A job directory archive sent by a client; kept by content hash."""

    __tablename__ = "uploads"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


class SiteAccountRow(Base):
    """A member's own account on a site (HPC centres give each person theirs)."""

    __tablename__ = "site_accounts"
    __table_args__ = (UniqueConstraint("user_id", "site", name="uq_site_accounts_user_site"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    site: Mapped[str] = mapped_column(String(64))
    remote_user: Mapped[str] = mapped_column(String(64))
    key_path: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime]


class SiteOutageRow(Base):
    """A site that stopped answering, since when: its waiting jobs may go elsewhere."""

    __tablename__ = "site_outages"

    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    since: Mapped[datetime]
    error: Mapped[str] = mapped_column(Text, default="")


class AbandonedAttemptRow(Base):
    """An attempt left at a site that stopped answering; cancelled there when it answers again."""

    __tablename__ = "abandoned_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    handle: Mapped[str | None] = mapped_column(String(256))
    at: Mapped[datetime]


class MetaRow(Base):
    """Facts about this factory itself, such as its id (one row per key)."""

    __tablename__ = "factory_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class LeaseRow(Base):
    """Who runs the scheduler loop: one holder at a time across API replicas."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- datasets


class DatasetRow(Base):
    """A dataset of the catalog, ``sector/name``, and the rules attached to it."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(96), primary_key=True)
    sector: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    publisher: Mapped[str] = mapped_column(String(200), default="")
    licence: Mapped[str] = mapped_column(String(200), default="")
    source: Mapped[str] = mapped_column(Text, default="")
    sensitivity: Mapped[str] = mapped_column(String(16))
    residency: Mapped[list[str]] = mapped_column(JSON, default=list)
    allowed_sites: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class DatasetVersionRow(Base):
    """One immutable version of a dataset (numbered from 1)."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version", name="uq_dataset_versions"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class DatasetFileRow(Base):
    """A file of a dataset version, with the size and SHA-256 staging verifies."""

    __tablename__ = "dataset_files"
    __table_args__ = (UniqueConstraint("version_id", "name", name="uq_dataset_files"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class DataAccessRow(Base):
    """A project's request to read a dataset, and the operator's decision on it."""

    __tablename__ = "data_access"
    __table_args__ = (Index("ix_data_access_dataset_project", "dataset_id", "project_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    requester: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))  # pending, granted, refused, revoked
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]


class QuantumAllocationRow(Base):
    """Shots and QPU-seconds granted to a project for ``[starts, ends)``, beside its hours."""

    __tablename__ = "quantum_allocations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    qpu_shots: Mapped[int] = mapped_column(BigInteger)
    qpu_seconds: Mapped[float] = mapped_column(Float)
    starts: Mapped[datetime]
    ends: Mapped[datetime]
    created_at: Mapped[datetime]


class QuantumUsageRow(Base):
    """The shots and device seconds of one attempt of a quantum task, charged when it ended."""

    __tablename__ = "quantum_usage"
    __table_args__ = (
        UniqueConstraint("job_id", "attempt", name="uq_quantum_usage_job_attempt"),
        Index("ix_quantum_usage_project_at", "project_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    site: Mapped[str] = mapped_column(String(64))
    device: Mapped[str] = mapped_column(String(64))
    qpu_shots: Mapped[int] = mapped_column(BigInteger)
    qpu_seconds: Mapped[float] = mapped_column(Float)
    eur: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime]


class QuantumResultRow(Base):
    """The outcome counts of a finished quantum task: the job's result."""

    __tablename__ = "quantum_results"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer)
    result: Mapped[dict[str, Any]]
    recorded_at: Mapped[datetime]


class ApiKeyRow(Base):
    """A project's key to the OpenAI-compatible gateway; only its SHA-256 hash is kept."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class ModelDeploymentRow(Base):
    """A model the gateway serves: in-process (``local``) or through replicas (``replicas``)."""

    __tablename__ = "model_deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(128), unique=True)
    engine: Mapped[str] = mapped_column(String(16))
    path: Mapped[str | None] = mapped_column(Text)
    task: Mapped[str] = mapped_column(String(16), default="chat")  # chat or embedding
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class ModelReplicaRow(Base):
    """One OpenAI-compatible server behind a deployment: registered by URL or a service job."""

    __tablename__ = "model_replicas"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("model_deployments.id", ondelete="CASCADE")
    )
    url: Mapped[str] = mapped_column(Text)
    upstream_model: Mapped[str | None] = mapped_column(String(256))
    site: Mapped[str | None] = mapped_column(String(64))
    jurisdiction: Mapped[str] = mapped_column(String(16))
    healthy: Mapped[bool] = mapped_column(default=False)
    checked_at: Mapped[datetime | None]
    last_error: Mapped[str] = mapped_column(Text, default="")
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]


class ModelPolicyRow(Base):
    """A project's terms for models: a token budget and the jurisdiction its requests stay in."""

    __tablename__ = "model_policies"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    token_budget: Mapped[int | None] = mapped_column(BigInteger)
    jurisdiction: Mapped[str | None] = mapped_column(String(16))
    updated_at: Mapped[datetime]


class TokenUsageRow(Base):
    """Tokens a project used with one model on one UTC day, beside its GPU-hours."""

    __tablename__ = "token_usage"
    __table_args__ = (
        UniqueConstraint("project_id", "model", "day", name="uq_token_usage_project_model_day"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(128))
    day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD, UTC
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
