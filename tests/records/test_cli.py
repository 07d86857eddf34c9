"""`lunos-proxy db migrate | check` against a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from lunos_proxy.cli import main


def config_for(tmp_path: Path, url: str) -> str:
    path = tmp_path / "lunos.yaml"
    path.write_text(f"records:\n  url: {url}\n")
    return str(path)


def test_db_check_fails_until_db_migrate_has_run(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, pg_url)
    assert main(["db", "check", "--config", config]) == 1
    assert "run `lunos-proxy db migrate`" in capsys.readouterr().err
    assert main(["db", "migrate", "--config", config]) == 0
    assert capsys.readouterr().out == (
        "applied schema 0 -> 1\napplied schema 1 -> 2\nrecords schema is current\n")
    assert main(["db", "migrate", "--config", config]) == 0
    assert capsys.readouterr().out == "records schema is current (nothing to do)\n"
    assert main(["db", "check", "--config", config]) == 0


def test_db_migrate_says_when_the_database_does_not_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.redis_servers import free_port

    config = config_for(tmp_path, f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    assert main(["db", "migrate", "--config", config]) == 1
    assert capsys.readouterr().err.startswith("db migrate: postgresql: ")


def test_serve_refuses_a_database_without_the_schema_naming_the_fix(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "lunos.yaml"
    config.write_text(f"records:\n  url: {pg_url}\nstore:\n  url: memory://\n"
                      "server: {port: 0, admin_port: 0}\n")
    assert main(["serve", "--config", str(config)]) == 2
    assert capsys.readouterr().err.strip() == (
        "lunos.yaml: records: no records schema: run `lunos-proxy db migrate`")
