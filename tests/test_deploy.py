"""The deployment files name only settings the service has (docs/deploy.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from audiences.config import Settings
from audiences.engines.factory import shared

DEPLOY = Path(__file__).parent.parent / "deploy"
COMPOSE_FILES = sorted(DEPLOY.glob("compose.*.yml"))
PREFIX = "AUDIENCES_"


def test_there_are_compose_files_for_both_shapes() -> None:
    assert [path.name for path in COMPOSE_FILES] == [
        "compose.cluster.yml",
        "compose.single-server.yml",
    ]


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda path: path.name)
def test_every_audiences_setting_in_a_compose_file_exists_and_parses(path: Path) -> None:
    services = yaml.safe_load(path.read_text())["services"]
    fields = {name.upper() for name in Settings.model_fields}
    parsed = {}
    for service in ("api", "worker"):
        environment = services[service]["environment"]
        ours = {key: value for key, value in environment.items() if key.startswith(PREFIX)}
        assert {key.removeprefix(PREFIX) for key in ours} <= fields
        overrides = {key.removeprefix(PREFIX).lower(): value for key, value in ours.items()}
        parsed[service] = Settings(**overrides)
        assert str(parsed[service].database_url).startswith("postgresql")
    assert services["worker"]["command"] == ["worker"]
    # Jobs that touch profiles run where the engine opens: in workers when every process can
    # (a shared engine), else in the API process, which then must run job threads.
    api = parsed["api"]
    assert shared(api) or api.worker_threads > 0


def test_the_single_server_shape_runs_every_job_in_workers() -> None:
    services = yaml.safe_load((DEPLOY / "compose.single-server.yml").read_text())["services"]
    environment = services["api"]["environment"]
    settings = Settings(
        **{
            k.removeprefix(PREFIX).lower(): v
            for k, v in environment.items()
            if k.startswith(PREFIX)
        }
    )
    assert shared(settings) and settings.worker_threads == 0
