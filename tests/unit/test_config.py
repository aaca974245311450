import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from cairn_server.common import config as config_module
from cairn_server.common.config import Config
from cairn_server.common.settings import ConfigError
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
        "CAIRN_S3_ENDPOINT": "minio:9000",
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
        ({"CAIRN_DB_POOL_SIZE": "0"}, "CAIRN_DB_POOL_SIZE must be from 1 to"),
        (
            {"CAIRN_DB_POOL_SIZE": "5", "CAIRN_DB_POOL_MIN_SIZE": "6"},
            "CAIRN_DB_POOL_SIZE must be at least CAIRN_DB_POOL_MIN_SIZE",
        ),
        ({"CAIRN_MAX_MESSAGE_BYTES": "10"}, "CAIRN_MAX_MESSAGE_BYTES must be from 1048576 to"),
        ({"CAIRN_METRICS_ADDRESS": "9090"}, "CAIRN_METRICS_ADDRESS must be host:port"),
        ({"CAIRN_HEALTH_ADDRESS": "0.0.0.0:probe"}, "CAIRN_HEALTH_ADDRESS must be host:port"),
        ({"CAIRN_METRICS_ADDRESS": "0.0.0.0:70000"}, "CAIRN_METRICS_ADDRESS must be host:port"),
        ({"CAIRN_LISTEN_ADDRESS": "127.0.0.1:99999"}, "CAIRN_LISTEN_ADDRESS must be host:port"),
        ({"CAIRN_LISTEN_ADDRESS": "127.0.0.1:-1"}, "CAIRN_LISTEN_ADDRESS must be host:port"),
        ({"CAIRN_LISTEN_ADDRESS": "127.0.0.1:abc"}, "CAIRN_LISTEN_ADDRESS must be host:port"),
        # Not the open-access error, whose advice fixed nothing: it read the address.
        ({"CAIRN_LISTEN_ADDRESS": "garbage"}, "CAIRN_LISTEN_ADDRESS must be host:port"),
        ({"CAIRN_LISTEN_ADDRESS": ""}, "CAIRN_LISTEN_ADDRESS must be host:port"),
        ({"CAIRN_ARTIFACT_DIRECT_PORT": "99999"}, "CAIRN_ARTIFACT_DIRECT_PORT must be from 0"),
        ({"CAIRN_TLS_KEY_FILE": "k.pem"}, "CAIRN_TLS_CERT_FILE and CAIRN_TLS_KEY_FILE go together"),
        ({"CAIRN_LISTEN_ADDRESS": "0.0.0.0:50051"}, "CAIRN_AUTH=none on 0.0.0.0:50051"),
        ({"CAIRN_LISTEN_ADDRESS": "10.1.2.3:50051"}, "would let anyone on the network"),
        ({"CAIRN_AUTH": "api_key", "CAIRN_AUTH_FAILURE_LIMIT": "0"}, "LIMIT must be at least 1"),
        ({"CAIRN_S3_TIMEOUT_SECONDS": "0"}, "CAIRN_S3_TIMEOUT_SECONDS must be from 0.001 to"),
        ({"CAIRN_HEALTH_PROBE_TIMEOUT_SECONDS": "0"}, "CAIRN_HEALTH_PROBE_.*from 0.001 to"),
        # An hour at most: at 1e300, health probed never and followed no outage.
        (
            {"CAIRN_HEALTH_PROBE_INTERVAL_SECONDS": "1e300"},
            "INTERVAL_SECONDS must be from 0.1 to 3600",
        ),
        ({"CAIRN_DB_ACQUIRE_TIMEOUT_SECONDS": "1e300"}, "_SECONDS must be from 0.001 to 3600"),
        ({"CAIRN_STREAM_STALL_SECONDS": "7200"}, "_SECONDS must be from 0.001 to 3600"),
        (
            {"CAIRN_AUTH_FAILURE_WINDOW_SECONDS": "1e300"},
            "WINDOW_SECONDS must be from 0.001 to 86400",
        ),
        ({"CAIRN_HEALTH_PROBE_INTERVAL_SECONDS": "nan"}, "must be a finite number, not nan"),
        ({"CAIRN_STREAM_STALL_SECONDS": "nan"}, "CAIRN_STREAM_STALL_SECONDS must be a finite"),
        ({"CAIRN_S3_TIMEOUT_SECONDS": "inf"}, "CAIRN_S3_TIMEOUT_SECONDS must be a finite"),
    ],
)
def test_bad_values_are_rejected_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        config_module.load(_flags(), env=env)


TEN_YEARS = "from 60 to 315360000 (10 years)"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        # Too large: each overflowed later, in PostgreSQL, Python or gRPC (audit 20, #4).
        ("CAIRN_REQUEST_ID_RETENTION_SECONDS", "1e16", f"{TEN_YEARS}, not 1e+16"),
        ("CAIRN_BATCH_ID_RETENTION_SECONDS", "1e16", f"{TEN_YEARS}, not 1e+16"),
        (
            "CAIRN_ARTIFACT_JANITOR_MIN_AGE_SECONDS",
            "1e12",
            "from 0 to 315360000 (10 years), not 1000000000000",
        ),
        (
            "CAIRN_ARTIFACT_JANITOR_INTERVAL_SECONDS",
            "1e12",
            "0 (off) or from 1 to 315360000 (10 years), not 1000000000000",
        ),
        (
            "CAIRN_DB_STATEMENT_TIMEOUT_SECONDS",
            "1e7",
            "0 (off) or from 0.001 to 2147483 (24 days, PostgreSQL's most), not 10000000",
        ),
        (
            "CAIRN_DB_WORK_MEM_KIB",
            "9999999999",
            "from 64 to 2147483647 (PostgreSQL's range), not 9999999999",
        ),
        (
            "CAIRN_MAX_MESSAGE_BYTES",
            "3000000000",
            "from 1048576 to 2147483647 (1 MiB to 2 GiB less a byte, gRPC's most), not 3000000000",
        ),
        ("CAIRN_SHUTDOWN_GRACE_SECONDS", "1e300", "from 0 to 3600 (an hour), not 1e+300"),
        ("CAIRN_S3_TIMEOUT_SECONDS", "1e10", "from 0.001 to 86400 (a day), not 10000000000"),
        # asyncpg set up every slot at start: 5000000 took 790 MB before serving.
        (
            "CAIRN_DB_POOL_SIZE",
            "5000000",
            "from 1 to 10000 (the pool sets up each at start), not 5000000",
        ),
        # Too small: below 0 asyncpg refused it once the database had started.
        ("CAIRN_DB_POOL_MIN_SIZE", "-1", "at least 0, not -1"),
        ("CAIRN_DB_WORK_MEM_KIB", "63", "from 64 to 2147483647 (PostgreSQL's range), not 63"),
        # Tiny but positive: an idle server spun, or the guard was off (audit 20, #5).
        ("CAIRN_REQUEST_ID_RETENTION_SECONDS", "0.001", f"{TEN_YEARS}, not 0.001"),
        ("CAIRN_BATCH_ID_RETENTION_SECONDS", "59", f"{TEN_YEARS}, not 59"),
        ("CAIRN_HEALTH_PROBE_INTERVAL_SECONDS", "1e-06", "from 0.1 to 3600 (an hour), not 1e-06"),
        (
            "CAIRN_ARTIFACT_JANITOR_INTERVAL_SECONDS",
            "0.001",
            "0 (off) or from 1 to 315360000 (10 years), not 0.001",
        ),
        (
            "CAIRN_DB_STATEMENT_TIMEOUT_SECONDS",
            "0.0004",  # PostgreSQL took round(0.4) ms as no timeout at all
            "0 (off) or from 0.001 to 2147483 (24 days, PostgreSQL's most), not 0.0004",
        ),
        ("CAIRN_DB_STATEMENT_TIMEOUT_SECONDS", "-1", "0 (off) or from 0.001 to 2147483"),
        ("CAIRN_SHUTDOWN_GRACE_SECONDS", "-0.5", "from 0 to 3600 (an hour), not -0.5"),
    ],
)
def test_numbers_out_of_range_name_the_variable_and_its_range(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{variable} must be {message}")):
        config_module.load(_flags(), env={variable: value})


S3 = {"CAIRN_ARTIFACT_BACKEND": "s3", "CAIRN_S3_ENDPOINT": "minio:9000"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CAIRN_ARTIFACT_BACKEND": "s3"}, "CAIRN_S3_ENDPOINT must name the store"),
        ({**S3, "CAIRN_S3_ENDPOINT": ""}, "CAIRN_S3_ENDPOINT must name the store"),
        ({**S3, "CAIRN_S3_ENDPOINT": "http://minio:9000"}, "CAIRN_S3_ENDPOINT must be host or"),
        ({**S3, "CAIRN_S3_ENDPOINT": "minio:99999"}, "CAIRN_S3_ENDPOINT must be host or"),
        ({**S3, "CAIRN_S3_PUBLIC_ENDPOINT": "s3/x"}, "CAIRN_S3_PUBLIC_ENDPOINT must be host or"),
        ({**S3, "CAIRN_S3_BUCKET": ""}, "CAIRN_S3_BUCKET must be a bucket name"),
        ({**S3, "CAIRN_S3_BUCKET": "my bucket"}, "CAIRN_S3_BUCKET must be a bucket name"),
        ({**S3, "CAIRN_S3_REGION": "us east 1"}, "CAIRN_S3_REGION must be a region name"),
    ],
)
def test_the_s3_backend_needs_settings_its_sdk_takes(env: dict[str, str], message: str) -> None:
    """Before, the server started without them: with no endpoint, every artifact write
    answered UNAVAILABLE (OBJECT_STORE_UNAVAILABLE), which clients retry, and the janitor
    logged "No host specified" tracebacks."""
    with pytest.raises(ConfigError, match=message):
        config_module.load(_flags(), env=env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        # Hosts the SDK took and urllib3 refused at every request (LocationParseError).
        ({**S3, "CAIRN_S3_ENDPOINT": " "}, "CAIRN_S3_ENDPOINT must name the store"),
        ({**S3, "CAIRN_S3_ENDPOINT": " minio:9000"}, "CAIRN_S3_ENDPOINT must be host or"),
        ({**S3, "CAIRN_S3_ENDPOINT": "min io:9000"}, "CAIRN_S3_ENDPOINT must be host or"),
        ({**S3, "CAIRN_S3_ENDPOINT": "minio\t:9000"}, "CAIRN_S3_ENDPOINT must be host or"),
        ({**S3, "CAIRN_S3_ENDPOINT": "m\u00ednio:9000"}, "CAIRN_S3_ENDPOINT must be host or"),
        ({**S3, "CAIRN_S3_ENDPOINT": "minio:"}, "CAIRN_S3_ENDPOINT must be host or"),
        ({**S3, "CAIRN_S3_PUBLIC_ENDPOINT": " "}, "CAIRN_S3_PUBLIC_ENDPOINT must be host or"),
        ({**S3, "CAIRN_S3_PUBLIC_ENDPOINT": "s3 :443"}, "CAIRN_S3_PUBLIC_ENDPOINT must be host"),
        # Prefixes the SDK refused in every object name: each upload UNAVAILABLE.
        ({**S3, "CAIRN_S3_PREFIX": ".."}, "CAIRN_S3_PREFIX must be a key prefix without"),
        ({**S3, "CAIRN_S3_PREFIX": "a/./b"}, "CAIRN_S3_PREFIX must be a key prefix without"),
        ({**S3, "CAIRN_S3_PREFIX": "team/../cairn"}, "CAIRN_S3_PREFIX must be a key prefix"),
        # Bytes of the environment that are no UTF-8: each upload INTERNAL or UNAVAILABLE.
        ({**S3, "CAIRN_S3_PREFIX": "p\udcff"}, "CAIRN_S3_PREFIX must be text UTF-8 can encode"),
        ({**S3, "CAIRN_S3_SECRET_KEY": "s3cret\udcff"}, "CAIRN_S3_SECRET_KEY must be text"),
        ({**S3, "CAIRN_S3_ACCESS_KEY": "s3cret\udcff"}, "CAIRN_S3_ACCESS_KEY must be printable"),
        ({**S3, "CAIRN_S3_ACCESS_KEY": "s3cret\n"}, "CAIRN_S3_ACCESS_KEY must be printable"),
    ],
)
def test_s3_settings_every_request_would_fail_with_are_refused(
    env: dict[str, str], message: str
) -> None:
    """The server started with them and served, and every artifact write failed:
    UNAVAILABLE (OBJECT_STORE_UNAVAILABLE), which clients retry for ever, or INTERNAL,
    while the janitor logged tracebacks. A key's value stays out of the message."""
    with pytest.raises(ConfigError, match=re.escape(message)) as refused:
        config_module.load(_flags(), env=env)
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:s3cret@db/postg\udcffres",
        "postgresql://\udcffu:s3cret@db/cairn",
        "postgresql://u:s3cret@db/cairn?application_name=a\udcffb",
    ],
)
def test_a_database_url_of_bytes_that_are_no_utf8_is_refused_unsaid(url: str) -> None:
    """asyncpg failed inside the event loop's callback: a traceback logged, then "cannot
    use the database at ...: connection was closed in the middle of operation", naming
    the URL, bytes and all."""
    with pytest.raises(ConfigError, match="CAIRN_DATABASE_URL's user, password") as refused:
        config_module.load(_flags(), env={"CAIRN_DATABASE_URL": url})
    assert "s3cret" not in str(refused.value)


def test_a_database_url_may_name_a_socket_or_file_of_any_bytes() -> None:
    """Python hands paths to the system as the bytes they were."""
    url = "postgresql://u@/cairn?host=/run/p\udcffg&sslrootcert=/etc/c\udcffa.pem"
    assert config_module.load(_flags(), env={"CAIRN_DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("s3_endpoint", "minio"),
        ("s3_endpoint", "s3.amazonaws.com"),
        ("s3_endpoint", "127.0.0.1:9000"),
        ("s3_endpoint", "[::1]:9000"),
        ("s3_public_endpoint", "files.example.com:443"),
        ("s3_prefix", "/cairn/"),
        ("s3_prefix", "team.ml/cairn..old"),
        ("s3_secret_key", "s\u00e9cret/+="),
    ],
)
def test_s3_settings_the_sdk_takes_are_taken(setting: str, value: str) -> None:
    settings: dict[str, Any] = {
        "artifact_backend": "s3",
        "s3_endpoint": "minio:9000",
        setting: value,
    }
    assert getattr(Config(**settings), setting) == value


@pytest.mark.parametrize(
    ("settings", "first", "second"),
    [
        (
            {"artifact_direct_port": 50051},
            "CAIRN_LISTEN_ADDRESS (127.0.0.1:50051)",
            "CAIRN_ARTIFACT_DIRECT_PORT (127.0.0.1:50051)",
        ),
        (
            {"metrics_address": "127.0.0.1:50051"},
            "CAIRN_LISTEN_ADDRESS (127.0.0.1:50051)",
            "CAIRN_METRICS_ADDRESS (127.0.0.1:50051)",
        ),
        (
            {"health_address": "0.0.0.0:50051"},  # every IPv4 address, 127.0.0.1 among them
            "CAIRN_LISTEN_ADDRESS (127.0.0.1:50051)",
            "CAIRN_HEALTH_ADDRESS (0.0.0.0:50051)",
        ),
        (
            {"health_address": "[::]:9090", "metrics_address": "localhost:9090"},
            "CAIRN_HEALTH_ADDRESS ([::]:9090)",
            "CAIRN_METRICS_ADDRESS (localhost:9090)",
        ),
        # A name and an address it resolves to. gRPC serves when it binds any address of
        # a name: it took ::1 alone, logged "serving", and its IPv4 clients reached the
        # metrics endpoint.
        (
            {"listen_address": "localhost:50051", "metrics_address": "127.0.0.1:50051"},
            "CAIRN_LISTEN_ADDRESS (localhost:50051)",
            "CAIRN_METRICS_ADDRESS (127.0.0.1:50051)",
        ),
        (
            {"listen_address": "localhost:50051", "health_address": "127.0.0.1:50051"},
            "CAIRN_LISTEN_ADDRESS (localhost:50051)",
            "CAIRN_HEALTH_ADDRESS (127.0.0.1:50051)",
        ),
        (  # an IPv4 address written as IPv6 is the same address
            {"metrics_address": "[::ffff:127.0.0.1]:50051"},
            "CAIRN_LISTEN_ADDRESS (127.0.0.1:50051)",
            "CAIRN_METRICS_ADDRESS ([::ffff:127.0.0.1]:50051)",
        ),
    ],
)
def test_two_endpoints_on_one_port_are_refused_naming_both(
    settings: dict[str, Any], first: str, second: str
) -> None:
    """The second to bind failed as "cannot listen on 127.0.0.1:50051
    (CAIRN_LISTEN_ADDRESS): the address is in use", which sent the operator looking
    for another process."""
    with pytest.raises(ConfigError) as refused:
        Config(**settings)
    assert str(refused.value) == (
        f"{first} and {second} take one port: give each a port of its own (0: any free one)"
    )


@pytest.mark.parametrize(
    "settings",
    [
        {"listen_address": "127.0.0.1:0", "health_address": "127.0.0.1:0"},
        {"metrics_address": "127.0.0.2:50051", "health_address": "[::1]:50051"},
        {
            "listen_address": "0.0.0.0:8080",
            "allow_open_access": True,
            "health_address": "[::1]:8080",
        },
        # No byte endpoint: the S3 backend's direct transfers use presigned URLs.
        {"artifact_direct_port": 50051, "artifact_backend": "s3", "s3_endpoint": "minio:9000"},
        {"artifact_direct_port": 50051, "artifact_direct": False},
    ],
)
def test_endpoints_on_ports_or_hosts_of_their_own_are_taken(settings: dict[str, Any]) -> None:
    assert Config(**settings)


def test_the_s3_settings_are_not_needed_by_the_filesystem_backend() -> None:
    assert Config(s3_bucket="", s3_endpoint="http://not/checked").s3_bucket == ""


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("request_id_retention_seconds", 60.0),
        ("request_id_retention_seconds", 315360000.0),
        ("batch_id_retention_seconds", 315360000.0),
        ("artifact_janitor_min_age_seconds", 0.0),
        ("artifact_janitor_min_age_seconds", 315360000.0),
        ("artifact_janitor_interval_seconds", 0.0),
        ("artifact_janitor_interval_seconds", 1.0),
        ("db_statement_timeout_seconds", 0.0),
        ("db_statement_timeout_seconds", 0.001),
        ("db_statement_timeout_seconds", 2147483.0),
        ("db_work_mem_kib", 64),
        ("db_work_mem_kib", 2**31 - 1),
        ("max_message_bytes", 2**31 - 1),
        ("db_pool_min_size", 0),
        ("db_pool_size", 1),
        ("db_pool_size", 10_000),
        ("shutdown_grace_seconds", 0.0),
        ("shutdown_grace_seconds", 3600.0),
        ("health_probe_interval_seconds", 0.1),
        ("s3_timeout_seconds", 86400.0),
    ],
)
def test_the_ends_of_each_range_are_taken(setting: str, value: float) -> None:
    settings: dict[str, Any] = {setting: value}
    assert getattr(Config(**settings), setting) == value


def test_every_range_is_in_the_documented_meaning() -> None:
    for f in dataclasses.fields(Config):
        if f.metadata["bounds"] is not None:
            assert f.metadata["help"].endswith(f"; {f.metadata['bounds']}"), f.name


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--artifact-janitor-min-age-seconds", "1e14"],
            "CAIRN_ARTIFACT_JANITOR_MIN_AGE_SECONDS must be from 0 to 315360000",
        ),
        (["--artifact-backend", "s3"], "CAIRN_S3_ENDPOINT must name the store"),
        (
            ["--listen-address", "127.0.0.1:50051", "--artifact-direct-port", "50051"],
            "CAIRN_LISTEN_ADDRESS (127.0.0.1:50051) and CAIRN_ARTIFACT_DIRECT_PORT",
        ),
    ],
)
def test_a_bad_setting_stops_the_server_before_it_starts_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    from cairn_server import cli

    data_dir = tmp_path / "data"
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--data-dir", str(data_dir), *flags])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert not data_dir.exists()  # no embedded PostgreSQL was started under it


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


def test_secrets_stay_out_of_the_settings_repr() -> None:
    """A traceback that shows locals (pytest's, rich's, an error tracker's) prints them."""
    env = {
        "CAIRN_DATABASE_URL": "postgresql://cairn:pg-s3cret@db:5432/cairn",
        "CAIRN_S3_ACCESS_KEY": "access-s3cret",
        "CAIRN_S3_SECRET_KEY": "secret-s3cret",
    }
    shown = repr(config_module.load(_flags(), env=env))
    assert "s3cret" not in shown
    assert "listen_address='127.0.0.1:50051'" in shown


@pytest.mark.parametrize(
    "host", ["http://files.example.com/", "a b", "files:8080", "x/y", "é.example", "[::1", "::1]"]
)
def test_a_direct_host_no_client_can_reach_is_refused(host: str) -> None:
    """It was handed to clients in every direct-transfer ticket, whose connections then
    failed, each falling back to streaming. An IPv6 address with one bracket of two was
    taken, which clients bracket again ("[[::1]")."""
    with pytest.raises(ConfigError, match="CAIRN_ARTIFACT_DIRECT_HOST must be a host name"):
        Config(artifact_direct_host=host)


@pytest.mark.parametrize(
    "host", ["", "files.example.com", "10.0.0.7", "::1", "[::1]", "cairn-artifacts"]
)
def test_a_direct_host_is_a_name_or_an_address(host: str) -> None:
    assert Config(artifact_direct_host=host).artifact_direct_host == host


def test_an_empty_data_directory_is_refused() -> None:
    """It put the embedded PostgreSQL and the artifacts under the current directory."""
    with pytest.raises(ConfigError, match="CAIRN_DATA_DIR must not be empty"):
        Config(data_dir="")


@pytest.mark.parametrize("address", ["127.0.0.1 :50051", " localhost:9090", "[::1:9090"])
def test_a_listen_address_whose_host_is_no_host_is_refused_as_malformed(address: str) -> None:
    """`127.0.0.1 :50051` passed as host:port and was refused as an open server's
    address ("CAIRN_AUTH=none on 127.0.0.1 :50051 would let anyone on the network ..."),
    which it is not."""
    with pytest.raises(ConfigError, match="CAIRN_LISTEN_ADDRESS must be host:port"):
        Config(listen_address=address)


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"auth_failure_window_seconds": -1}, "CAIRN_AUTH_FAILURE_WINDOW_SECONDS"),
        ({"tls_client_ca_file": "ca.pem"}, "CAIRN_TLS_KEY_FILE"),
    ],
)
def test_a_refusal_of_settings_together_names_each_whole(
    settings: dict[str, Any], names: str
) -> None:
    """They were shortened to `_WINDOW_SECONDS`, `_KEY_FILE`: no variable of that name."""
    with pytest.raises(ConfigError, match=names):
        Config(**settings)


def test_a_variable_no_setting_reads_is_named_with_the_nearest_setting() -> None:
    """A misspelt setting was left at its default without a word."""
    env = {
        "CAIRN_SHUTDOWN_GRACE_SECOND": "5",
        "CAIRN_DATABASE_URI": "postgresql://db/cairn",
        "CAIRN_NOTHING_LIKE_IT": "1",
        "CAIRN_LOG_LEVEL": "debug",  # a setting
        "CAIRN_METRICS_PORT": "9090",  # no setting, though it ends as a link's name
        "PATH": "/usr/bin",
    }
    # Kubernetes' service links, of Services named cairn-tracking and cairn.
    for service in ("CAIRN_TRACKING", "CAIRN"):
        env[f"{service}_SERVICE_HOST"] = env[f"{service}_PORT_50051_TCP_ADDR"] = "10.0.0.7"
        env[f"{service}_SERVICE_PORT"] = env[f"{service}_SERVICE_PORT_GRPC"] = "50051"
        env[f"{service}_PORT"] = env[f"{service}_PORT_50051_TCP"] = "tcp://10.0.0.7:50051"
        env[f"{service}_PORT_50051_TCP_PROTO"] = "tcp"
    assert config_module.unread_variables(env) == {
        "CAIRN_DATABASE_URI": "CAIRN_DATABASE_URL",
        "CAIRN_METRICS_PORT": None,
        "CAIRN_NOTHING_LIKE_IT": None,
        "CAIRN_SHUTDOWN_GRACE_SECOND": "CAIRN_SHUTDOWN_GRACE_SECONDS",
    }


def test_the_clients_own_variables_are_read_by_it_not_misspelt_settings() -> None:
    """A server's environment may hold the client's and the `cairn` command's too."""
    client = repo_root() / "clients/python/cairn"
    named = {
        name
        for path in client.rglob("*.py")
        for name in re.findall(r"\"(CAIRN_[A-Z_]+)\"", path.read_text())
    }
    assert "CAIRN_PROFILES" in named
    assert config_module.unread_variables(dict.fromkeys(named, "")) == {}
