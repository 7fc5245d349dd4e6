"""The console's Models page through the test client: cards, keys, and a key used on /v1.

The chat itself streams in Chromium (test_console_browser2.py); here: the
catalog's cards and what is served, a key made (its secret shown once and
usable on ``/v1`` at once), listed without its secret and revoked; members
see and touch only their projects' keys.
"""

from __future__ import annotations

import re

from grappe.services import projects
from grappe.services.auth import authenticate
from tests.conftest import World
from tests.test_console import form_token, sign_in


def make_key(client, project: str = "demo", **fields: str):  # type: ignore[no-untyped-def]
    token = form_token(client.get("/models").text)
    return client.post("/models/keys", data={"csrf": token, "project": project, **fields})


def test_the_models_page_shows_cards_and_what_is_served(sqlite_world: World) -> None:
    alice = sign_in(sqlite_world, sqlite_world.user("alice"))
    page = alice.get("/models")
    assert page.status_code == 200 and 'href="/models"' in page.text
    assert 'data-model="mistral-7b-instruct-v0.3"' in page.text and "Apache-2.0" in page.text
    assert "32,768" in page.text  # Mistral 7B's context, from its card
    # The packaged embedding model is served; nothing to chat with until an operator deploys.
    assert 'data-model="all-MiniLM-L6-v2" data-served="true"' in page.text
    assert 'data-model="mistral-7b-instruct-v0.3" data-served="false"' in page.text
    assert 'id="no-chat"' in page.text
    assert 'id="no-keys"' in page.text


def test_a_key_is_shown_once_works_on_v1_and_can_be_revoked(sqlite_world: World) -> None:
    alice = sign_in(sqlite_world, sqlite_world.user("alice"))
    made = make_key(alice, name="notebook", rpm="60")
    assert made.status_code == 201 and made.headers["cache-control"] == "no-store"
    secret = re.search(r'<code id="new-key">(grpk_[^<]+)</code>', made.text)
    assert secret, made.text
    key = secret.group(1)
    listed = alice.get("/models").text
    assert key not in listed and "notebook" in listed and "60 requests/min" in listed
    v1 = sqlite_world.http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert v1.status_code == 200 and v1.json()["object"] == "list"
    key_id = int(re.search(r'data-key="(\d+)"', listed).group(1))  # type: ignore[union-attr]
    gone = alice.post(
        f"/models/keys/{key_id}/revoke", data={"csrf": form_token(listed)}, follow_redirects=False
    )
    assert gone.status_code == 303
    assert 'data-revoked="true"' in alice.get("/models").text
    refused = sqlite_world.http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert refused.status_code == 401 and "not valid" in refused.json()["error"]["message"]


def test_members_see_and_touch_only_their_projects_keys(world: World) -> None:
    admin = authenticate(world.factory.store, world.admin_token)
    bob_token = world.user("bob", None)
    projects.create_project(world.factory.store, admin, "secret", 1, 10, members=["bob"])
    bob = sign_in(world, bob_token)
    assert make_key(bob, "secret", name="bobs").status_code == 201
    alice = sign_in(world, world.user("alice"))
    page = alice.get("/models").text
    assert "bobs" not in page and "<option>secret</option>" not in page
    refused = make_key(alice, "secret")
    assert refused.status_code == 404 and "you are not a member" in refused.text
    bob_key = int(re.search(r'data-key="(\d+)"', bob.get("/models").text).group(1))  # type: ignore[union-attr]
    touched = alice.post(f"/models/keys/{bob_key}/revoke", data={"csrf": form_token(page)})
    assert touched.status_code == 404
    assert 'data-revoked="true"' not in bob.get("/models").text
    bad = make_key(alice, name="no spaces please")
    assert bad.status_code == 422 and "name: use letters" in bad.text
    limit = make_key(alice, rpm="lots")
    assert limit.status_code == 422 and "rpm: write a whole number" in limit.text
    assert alice.post("/models/keys", data={"project": "demo"}).status_code == 403  # no token


def test_models_page_in_french(sqlite_world: World) -> None:
    alice = sign_in(sqlite_world, sqlite_world.user("alice"), lang="fr")
    page = alice.get("/models").text
    assert ">Modèles<" in page and "Clés d&#39;API" in page and "pas encore servi" in page
