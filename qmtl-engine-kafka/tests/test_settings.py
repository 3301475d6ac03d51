"""KafkaEngineSettings: validation, secrets that never show, and the librdkafka mapping."""

from __future__ import annotations

import pytest

from qmtl.errors import ModelValidationError
from qmtl_engine_kafka import KafkaEngineSettings, client_config, redacted


def _secure() -> KafkaEngineSettings:
    return KafkaEngineSettings(
        bootstrap_servers=["b1:9093", "b2:9093"],
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="quant",
        sasl_password="hunter2-secret",
        ssl_ca_location="/etc/ssl/ca.pem",
        ssl_key_password="keypass-secret",
        client_options={"linger.ms": 20},
    )


def test_secrets_never_appear_in_repr_str_or_dumps() -> None:
    settings = _secure()
    for shown in (
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        str(settings.model_dump()),
        str(redacted(client_config(settings))),
    ):
        assert "hunter2-secret" not in shown
        assert "keypass-secret" not in shown


def test_client_config_maps_every_option_to_librdkafka_names() -> None:
    config = client_config(_secure())
    assert config["bootstrap.servers"] == "b1:9093,b2:9093"
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.username"] == "quant"
    assert config["sasl.password"] == "hunter2-secret"
    assert config["ssl.ca.location"] == "/etc/ssl/ca.pem"
    assert config["ssl.key.password"] == "keypass-secret"
    assert config["linger.ms"] == 20


def test_plaintext_defaults_carry_no_security_keys() -> None:
    config = client_config(KafkaEngineSettings())
    assert config["bootstrap.servers"] == "localhost:9092"
    assert not any(key.startswith(("sasl.", "ssl.")) for key in config)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs sasl_mechanism"),
        ({"sasl_mechanism": "PLAIN"}, "use SASL_SSL or SASL_PLAINTEXT"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}, "needs sasl_username"),
        ({"partitions": 0}, "partitions"),
        ({"bootstrap_servers": " , "}, "at least one host:port"),
        ({"security_protocol": "TLS"}, "security_protocol"),
        (
            {"max_poll_interval_s": 5},
            r"max_poll_interval_s \(5\) must be at least "
            r"session_timeout_s \(10\)",
        ),
        ({"session_timeout_s": 30, "max_poll_interval_s": 20}, "lower session_timeout_s"),
    ],
)
def test_unusable_settings_are_rejected_naming_the_field(options: dict, message: str) -> None:
    with pytest.raises(ModelValidationError, match=message):
        KafkaEngineSettings(**options)


@pytest.mark.parametrize("kind", ["Producer", "Consumer", "AdminClient"])
@pytest.mark.parametrize(
    ("settings", "names"),
    [
        (
            KafkaEngineSettings(security_protocol="SSL", ssl_ca_location="/nonexistent/ca.pem"),
            ("ssl_ca_location", "'/nonexistent/ca.pem'", "no such file", "CA certificate"),
        ),
        (
            KafkaEngineSettings(client_options={"bogus.prop": 1}),
            ("client_options['bogus.prop']", "No such configuration property"),
        ),
        (
            KafkaEngineSettings(client_options={"linger.ms": "soon"}),
            ("client_options['linger.ms'] = 'soon'", "fix or remove the option"),
        ),
    ],
)
def test_an_option_librdkafka_refuses_is_a_configuration_error_naming_it(
    kind: str, settings: KafkaEngineSettings, names: tuple[str, ...]
) -> None:
    from qmtl.errors import ConfigurationError
    from qmtl_engine_kafka._client import new_client

    overrides = {"group.id": "g"} if kind == "Consumer" else None
    with pytest.raises(ConfigurationError) as caught:
        new_client(kind, settings, overrides, what="The test")  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("The test: ")
    for name in names:
        assert name in message


def test_a_refused_secret_option_is_never_shown() -> None:
    from qmtl_engine_kafka._client import _refused

    settings = _secure()
    config = client_config(settings)
    quoting = ValueError('Invalid value "keypass-secret" for property "ssl.key.password"')
    message = str(_refused("The test", "Producer", settings, config, {}, quoting))
    assert "ssl_key_password (librdkafka 'ssl.key.password') = '**********'" in message
    assert "keypass-secret" not in message
