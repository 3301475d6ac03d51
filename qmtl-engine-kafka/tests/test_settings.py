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
    for shown in (repr(settings), str(settings), settings.model_dump_json(),
                  str(settings.model_dump()), str(redacted(client_config(settings)))):
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
        ({"max_poll_interval_s": 5}, r"max_poll_interval_s \(5\) must be at least "
                                     r"session_timeout_s \(10\)"),
        ({"session_timeout_s": 30, "max_poll_interval_s": 20}, "lower session_timeout_s"),
    ],
)
def test_unusable_settings_are_rejected_naming_the_field(options: dict, message: str) -> None:
    with pytest.raises(ModelValidationError, match=message):
        KafkaEngineSettings(**options)
