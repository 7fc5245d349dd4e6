"""Settings of a running factory, read from ``GRAPPE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where the factory keeps its state and what it serves.

    ``GRAPPE_HOME`` holds the SQLite store, the admin token, uploads and the
    local site's job directories. ``GRAPPE_DATABASE_URL`` switches the store
    to PostgreSQL. ``GRAPPE_FACTORY`` points at a ``factory.yaml``; without it
    the factory is this machine, as the site ``local``, and its quantum emulators.
    """

    model_config = SettingsConfigDict(env_prefix="GRAPPE_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".grappe")
    database_url: str | None = None
    factory: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    scheduler_interval_s: float = Field(default=1.0, gt=0)
    policy: str = "grappe"
    # The demo project's allocation on first start, so the examples run as they are.
    demo_gpu_hours: float = 10.0
    demo_cpu_hours: float = 100.0
    max_upload_bytes: int = 100 * 1024 * 1024
    # A site silent this long gives up the jobs it has not started, to be placed elsewhere.
    site_down_requeue_s: float = Field(default=300.0, ge=0)
    # Federation files (*.yaml) the console's Plan page offers besides the live sites;
    # without it, a source checkout's examples/federations.
    console_federations: Path | None = None
    # Where dataset files live: any fsspec URL (s3://bucket/grappe, file:///srv/data...);
    # by default a directory under GRAPPE_HOME.
    data_url: str | None = None
    max_dataset_file_bytes: int = Field(default=1024**3, gt=0)
    # Seed the catalog with the small open datasets that installed packages ship (first start).
    seed_datasets: bool = True
    # How often the models gateway checks its replicas' health and writes the token ledger.
    gateway_health_interval_s: float = Field(default=2.0, gt=0)
    # Any other request body (JSON) may be this large; more is refused with 413 before it is read.
    max_body_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    # Failed authentications one client address may make in a minute before it gets 429 (0: off).
    auth_failures_per_minute: int = Field(default=30, ge=0)

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'grappe.db'}"

    @property
    def admin_token_path(self) -> Path:
        return self.home / "admin.token"

    @property
    def uploads_dir(self) -> Path:
        return self.home / "uploads"

    @property
    def data_storage_url(self) -> str:
        return self.data_url or (self.home / "datasets").as_uri()

    def site_root(self, site: str) -> Path:
        return self.home / "sites" / site
