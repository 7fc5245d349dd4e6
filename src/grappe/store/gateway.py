"""Store access for the models gateway: API keys, deployments and replicas, policies, tokens."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from grappe.store.tables import (
    ApiKeyRow,
    ModelDeploymentRow,
    ModelPolicyRow,
    ModelReplicaRow,
    ProjectRow,
    TokenUsageRow,
    utcnow,
)


@dataclass(frozen=True)
class KeyInfo:
    """What a request's API key grants: its project, its limits and the project's terms."""

    key_id: int
    name: str
    project_id: int
    project: str
    rpm: int | None
    tpm: int | None
    token_budget: int | None
    jurisdiction: str | None


def add_key(s: Session, **fields: object) -> ApiKeyRow:
    row = ApiKeyRow(created_at=utcnow(), **fields)
    s.add(row)
    s.flush()
    return row


def key_by_hash(s: Session, key_hash: str) -> KeyInfo | None:
    found = s.execute(
        select(ApiKeyRow, ProjectRow.name)
        .join(ProjectRow, ProjectRow.id == ApiKeyRow.project_id)
        .where(ApiKeyRow.key_hash == key_hash, ApiKeyRow.revoked_at.is_(None))
    ).first()
    if found is None:
        return None
    key, project = found
    policy = s.get(ModelPolicyRow, key.project_id)
    return KeyInfo(
        key.id,
        key.name,
        key.project_id,
        project,
        key.rpm,
        key.tpm,
        policy.token_budget if policy else None,
        policy.jurisdiction if policy else None,
    )


def list_keys(s: Session, projects: Iterable[str] | None) -> list[tuple[ApiKeyRow, str]]:
    query = (
        select(ApiKeyRow, ProjectRow.name)
        .join(ProjectRow, ProjectRow.id == ApiKeyRow.project_id)
        .order_by(ApiKeyRow.id)
    )
    if projects is not None:
        query = query.where(ProjectRow.name.in_(list(projects)))
    return [(k, p) for k, p in s.execute(query).all()]


def key_by_id(s: Session, key_id: int) -> tuple[ApiKeyRow, str] | None:
    found = s.execute(
        select(ApiKeyRow, ProjectRow.name)
        .join(ProjectRow, ProjectRow.id == ApiKeyRow.project_id)
        .where(ApiKeyRow.id == key_id)
    ).first()
    return None if found is None else (found[0], found[1])


def deployments(s: Session) -> list[ModelDeploymentRow]:
    return list(s.scalars(select(ModelDeploymentRow).order_by(ModelDeploymentRow.model)))


def deployment(s: Session, model: str) -> ModelDeploymentRow | None:
    return s.scalar(select(ModelDeploymentRow).where(ModelDeploymentRow.model == model))


def add_deployment(s: Session, **fields: object) -> ModelDeploymentRow:
    row = ModelDeploymentRow(created_at=utcnow(), **fields)
    s.add(row)
    s.flush()
    return row


def replicas(s: Session, deployment_id: int | None = None) -> list[ModelReplicaRow]:
    query = select(ModelReplicaRow).order_by(ModelReplicaRow.id)
    if deployment_id is not None:
        query = query.where(ModelReplicaRow.deployment_id == deployment_id)
    return list(s.scalars(query))


def add_replica(s: Session, **fields: object) -> ModelReplicaRow:
    row = ModelReplicaRow(created_at=utcnow(), healthy=False, last_error="", **fields)
    s.add(row)
    s.flush()
    return row


def set_health(s: Session, replica_id: int, healthy: bool, error: str, at: datetime) -> None:
    row = s.get(ModelReplicaRow, replica_id)
    if row is not None:
        row.healthy, row.last_error, row.checked_at = healthy, error[:500], at


def policy(s: Session, project_id: int) -> ModelPolicyRow | None:
    return s.get(ModelPolicyRow, project_id)


def set_policy(
    s: Session, project_id: int, token_budget: int | None, jurisdiction: str | None
) -> ModelPolicyRow:
    row = s.get(ModelPolicyRow, project_id)
    if row is None:
        row = ModelPolicyRow(project_id=project_id, updated_at=utcnow())
        s.add(row)
    row.token_budget, row.jurisdiction, row.updated_at = token_budget, jurisdiction, utcnow()
    s.flush()
    return row


def add_tokens(
    s: Session, project_id: int, model: str, day: str, requests: int, prompt: int, completion: int
) -> None:
    """Add to the (project, model, day) row of the ledger, creating it on first use."""
    row = s.scalar(
        select(TokenUsageRow).where(
            TokenUsageRow.project_id == project_id,
            TokenUsageRow.model == model,
            TokenUsageRow.day == day,
        )
    )
    if row is None:
        s.add(
            TokenUsageRow(
                project_id=project_id,
                model=model,
                day=day,
                requests=requests,
                prompt_tokens=prompt,
                completion_tokens=completion,
            )
        )
    else:
        row.requests += requests
        row.prompt_tokens += prompt
        row.completion_tokens += completion
    s.flush()


def tokens_used(s: Session, project_id: int) -> int:
    total = s.scalar(
        select(
            func.coalesce(
                func.sum(TokenUsageRow.prompt_tokens + TokenUsageRow.completion_tokens), 0
            )
        ).where(TokenUsageRow.project_id == project_id)
    )
    return int(total or 0)


def token_usage(s: Session, project_ids: list[int]) -> list[dict[str, object]]:
    """Tokens by project and model (all days), for the usage report."""
    rows = s.execute(
        select(
            ProjectRow.name,
            TokenUsageRow.model,
            func.sum(TokenUsageRow.requests),
            func.sum(TokenUsageRow.prompt_tokens),
            func.sum(TokenUsageRow.completion_tokens),
        )
        .join(ProjectRow, ProjectRow.id == TokenUsageRow.project_id)
        .where(TokenUsageRow.project_id.in_(project_ids))
        .group_by(ProjectRow.name, TokenUsageRow.model)
        .order_by(ProjectRow.name, TokenUsageRow.model)
    ).all()
    return [
        {
            "project": p,
            "model": m,
            "requests": int(r),
            "prompt_tokens": int(pt),
            "completion_tokens": int(ct),
            "tokens": int(pt) + int(ct),
        }
        for p, m, r, pt, ct in rows
    ]
