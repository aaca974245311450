import argparse

import pytest

from cairn_server.common import config as config_module
from cairn_server.common.config import Config, ConfigError
from tests.conftest import repo_root


def _flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config_module.add_flags(parser)
    return parser.parse_args(list(argv))


def test_defaults_serve_locally_without_configuration() -> None:
    config = config_module.load(_flags(), env={})
    assert config.listen_address == "127.0.0.1:50051"
    assert config.database_url == ""
    assert config.artifact_backend == "filesystem"
    assert str(config.artifact_dir) == ".cairn/artifacts"


def test_environment_sets_values_of_every_type() -> None:
    env = {
        "CAIRN_LISTEN_ADDRESS": "0.0.0.0:6000",
        "CAIRN_DB_POOL_SIZE": "25",
        "CAIRN_S3_SECURE": "false",
        "CAIRN_SHUTDOWN_GRACE_SECONDS": "2.5",
        "CAIRN_ARTIFACT_BACKEND": "s3",
        "CAIRN_AUTH": "api_key",
    }
    config = config_module.load(_flags(), env=env)
    assert config.listen_address == "0.0.0.0:6000"
    assert config.db_pool_size == 25
    assert config.s3_secure is False
    assert config.shutdown_grace_seconds == 2.5
    assert config.artifact_backend == "s3"
    assert config.auth == "api_key"


def test_flag_wins_over_environment() -> None:
    env = {"CAIRN_LOG_FORMAT": "json", "CAIRN_MIGRATE_ON_START": "true"}
    config = config_module.load(_flags("--log-format", "console", "--no-migrate-on-start"), env=env)
    assert config.log_format == "console"
    assert config.migrate_on_start is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CAIRN_DB_POOL_SIZE": "many"}, "CAIRN_DB_POOL_SIZE='many' is not a valid int"),
        ({"CAIRN_S3_SECURE": "maybe"}, "CAIRN_S3_SECURE='maybe' is not a valid bool"),
        ({"CAIRN_ARTIFACT_BACKEND": "ftp"}, "CAIRN_ARTIFACT_BACKEND must be one of"),
        ({"CAIRN_DB_POOL_SIZE": "0"}, "CAIRN_DB_POOL_SIZE must be at least"),
        ({"CAIRN_MAX_MESSAGE_BYTES": "10"}, "CAIRN_MAX_MESSAGE_BYTES must be at least 1 MiB"),
        ({"CAIRN_METRICS_ADDRESS": "9090"}, "CAIRN_METRICS_ADDRESS must be host:port"),
        ({"CAIRN_HEALTH_ADDRESS": "0.0.0.0:probe"}, "CAIRN_HEALTH_ADDRESS must be host:port"),
        ({"CAIRN_METRICS_ADDRESS": "0.0.0.0:70000"}, "CAIRN_METRICS_ADDRESS must be host:port"),
        ({"CAIRN_LISTEN_ADDRESS": "127.0.0.1:99999"}, "CAIRN_LISTEN_ADDRESS must be host:port"),
        ({"CAIRN_LISTEN_ADDRESS": "127.0.0.1:-1"}, "CAIRN_LISTEN_ADDRESS must be host:port"),
        ({"CAIRN_LISTEN_ADDRESS": "127.0.0.1:abc"}, "CAIRN_LISTEN_ADDRESS must be host:port"),
        ({"CAIRN_ARTIFACT_DIRECT_PORT": "99999"}, "CAIRN_ARTIFACT_DIRECT_PORT must be from 0"),
        ({"CAIRN_TLS_KEY_FILE": "k.pem"}, "CAIRN_TLS_CERT_FILE and CAIRN_TLS_KEY_FILE go together"),
        ({"CAIRN_LISTEN_ADDRESS": "0.0.0.0:50051"}, "CAIRN_AUTH=none on 0.0.0.0:50051"),
        ({"CAIRN_LISTEN_ADDRESS": "10.1.2.3:50051"}, "would let anyone on the network"),
        ({"CAIRN_AUTH": "api_key", "CAIRN_AUTH_FAILURE_LIMIT": "0"}, "must be positive"),
        ({"CAIRN_S3_TIMEOUT_SECONDS": "0"}, "CAIRN_S3_TIMEOUT_SECONDS must be positive"),
        ({"CAIRN_HEALTH_PROBE_TIMEOUT_SECONDS": "0"}, "CAIRN_HEALTH_PROBE_.*must be positive"),
        ({"CAIRN_HEALTH_PROBE_INTERVAL_SECONDS": "nan"}, "must be a finite number, not nan"),
        ({"CAIRN_STREAM_STALL_SECONDS": "nan"}, "CAIRN_STREAM_STALL_SECONDS must be a finite"),
        ({"CAIRN_S3_TIMEOUT_SECONDS": "inf"}, "CAIRN_S3_TIMEOUT_SECONDS must be a finite"),
    ],
)
def test_bad_values_are_rejected_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        config_module.load(_flags(), env=env)


@pytest.mark.parametrize(
    "address", ["127.0.0.1:50051", "127.0.0.2:1", "localhost:50051", "[::1]:50051"]
)
def test_auth_may_be_off_on_loopback_addresses(address: str) -> None:
    assert config_module.load(_flags(), env={"CAIRN_LISTEN_ADDRESS": address}).auth == "none"


def test_auth_may_be_off_elsewhere_only_when_explicitly_allowed() -> None:
    env = {"CAIRN_LISTEN_ADDRESS": "0.0.0.0:50051", "CAIRN_ALLOW_OPEN_ACCESS": "true"}
    config = config_module.load(_flags(), env=env)
    assert (config.auth, config.allow_open_access) == ("none", True)


def test_secrets_are_masked_in_the_logged_form() -> None:
    config = Config(database_url="postgresql://u:pw@db/cairn", s3_secret_key="s3cret")
    shown = config.redacted()
    assert shown["database_url"] == "***"
    assert shown["s3_secret_key"] == "***"
    assert shown["s3_access_key"] == ""
    assert "pw" not in repr(shown)


def test_documented_table_matches_the_settings() -> None:
    documented = (repo_root() / "docs" / "configuration.md").read_text()
    assert config_module.table_markdown() in documented


def test_malloc_tuning_applies_on_glibc() -> None:
    import platform

    from cairn_server.common import memory

    applied = memory.tune_for_large_buffers()
    assert applied == (platform.libc_ver()[0] == "glibc")
