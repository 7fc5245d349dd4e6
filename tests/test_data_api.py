"""The dataset API's edges on SQLite and PostgreSQL: bad input, roles, immutability, limits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import World, open_world
from tests.test_data_story import HEALTH, add_health

FILES = "/api/v1/datasets/health/cohort/versions/1/files"


@pytest.fixture
def small(tmp_path: Path, store_url: str) -> Iterator[World]:
    w = open_world(tmp_path, store_url, max_dataset_file_bytes=1000)
    yield w
    w.factory.close()


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("..%2F..%2Fescape.csv", "may not hold '/'"),
        ("%2Fetc%2Fpasswd", "absolute path"),
        ("a%00b.csv", "NUL"),
        ("sub/inner.csv", "may not hold '/'"),
    ],
)
def test_upload_names_that_leave_the_version_get_422(small: World, path: str, words: str) -> None:
    add_health(small)
    resp = small.client().put(
        f"/api/v1/datasets/health/cohort/versions/2/files/{path}", content=b"x"
    )
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["problems"][0]["field"] == "file" and words in err["message"]
    stored = small.factory.settings.home / "datasets"
    assert sorted(p.name for p in stored.rglob("*") if p.is_file()) == ["cohort.csv"]


def test_versions_are_immutable_and_numbered_in_order(small: World) -> None:
    add_health(small)
    admin = small.client()
    again = admin.put(f"{FILES}/cohort.csv", content=b"other")
    assert again.status_code == 409 and "immutable" in again.json()["error"]["message"]
    skipped = admin.put("/api/v1/datasets/health/cohort/versions/5/files/a.csv", content=b"1")
    assert skipped.status_code == 422 and "start 2" in skipped.json()["error"]["message"]
    ok = admin.put("/api/v1/datasets/health/cohort/versions/2/files/a.csv", content=b"1")
    assert ok.status_code == 201
    versions = admin.get("/api/v1/datasets/health/cohort/versions").json()
    assert [(v["version"], [f["name"] for f in v["files"]]) for v in versions] == [
        (1, ["cohort.csv"]),
        (2, ["a.csv"]),
    ]


def test_a_file_over_the_limit_is_refused_and_not_kept(small: World) -> None:
    add_health(small)
    big = small.client().put(
        "/api/v1/datasets/health/cohort/versions/2/files/big.csv", content=b"x" * 1001
    )
    assert big.status_code == 413 and "1000 bytes" in big.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the stream itself is counted
        for _ in range(11):
            yield b"y" * 100

    streamed = small.client().put(
        "/api/v1/datasets/health/cohort/versions/2/files/big.csv", content=chunks()
    )
    assert streamed.status_code == 413
    assert small.client().get("/api/v1/datasets/health/cohort").json()["latest_version"] == 1
    assert not list((small.factory.settings.home / "datasets").rglob("big.csv*"))


def test_members_may_not_add_or_upload_and_unknown_things_are_named(small: World) -> None:
    member = small.client(small.user("eve"))
    assert member.post("/api/v1/datasets", json=HEALTH).status_code == 403
    add_health(small)
    assert member.put(f"{FILES}/x.csv", content=b"1").status_code == 403
    missing = member.get("/api/v1/datasets/health/nothing")
    assert missing.status_code == 404 and "grappe data ls" in missing.json()["error"]["message"]
    bad_id = small.client().post("/api/v1/datasets", json={**HEALTH, "id": "Health/X"})
    assert bad_id.status_code == 422 and bad_id.json()["error"]["problems"][0]["field"] == "id"
    nowhere = small.client().post(
        "/api/v1/datasets", json={**HEALTH, "id": "health/b", "residency": ["mars"]}
    )
    assert nowhere.status_code == 422 and "no such site" in nowhere.json()["error"]["message"]
    unlisted = small.client().post(
        "/api/v1/datasets", json={**HEALTH, "id": "energy/c", "sensitivity": "restricted"}
    )
    assert unlisted.status_code == 422 and "allowed_sites" in unlisted.json()["error"]["message"]
    assert small.client().post("/api/v1/datasets", json=HEALTH).status_code == 409


def test_requests_are_checked_and_decided_once(small: World) -> None:
    add_health(small)
    open_spec = {**HEALTH, "id": "energy/open", "sensitivity": "open"}
    small.client().post("/api/v1/datasets", json=open_spec)
    member = small.client(small.user("fay"))
    body = {"project": "demo", "purpose": "a study of readmissions"}
    no_need = member.post("/api/v1/datasets/energy/open/requests", json=body)
    assert no_need.status_code == 422 and "open data needs no request" in no_need.text
    short = member.post("/api/v1/datasets/health/cohort/requests", json={**body, "purpose": "x"})
    assert short.status_code == 422 and short.json()["error"]["problems"][0]["field"] == "purpose"
    other = member.post("/api/v1/datasets/health/cohort/requests", json={**body, "project": "zz"})
    assert other.status_code == 422
    req = member.post("/api/v1/datasets/health/cohort/requests", json=body).json()["id"]
    twice = member.post("/api/v1/datasets/health/cohort/requests", json=body)
    assert twice.status_code == 409 and "awaits an operator" in twice.text
    past = small.client().post(f"/api/v1/data/requests/{req}/grant", json={"expires": "2001-01-01"})
    assert past.status_code == 422 and "in the past" in past.text
    assert small.client().post(f"/api/v1/data/requests/{req}/grant", json={}).status_code == 200
    again = small.client().post(f"/api/v1/data/requests/{req}/refuse", json={"reason": "late"})
    assert again.status_code == 409 and "granted, not pending" in again.text
    listed = small.client().get("/api/v1/data/requests", params={"state": "bogus"})
    assert listed.status_code == 422
