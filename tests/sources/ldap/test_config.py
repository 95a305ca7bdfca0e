"""The ``type: ldap`` config model: presets, overrides, secrets, validation messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from syncd.config import masked_config, parse_config
from syncd.errors import ConfigError
from syncd.sources.ldap.config import (
    Flavor,
    GroupStrategy,
    LdapSourceConfig,
    TagRule,
)

SOURCE = (
    "{type: ldap, urls: ['ldaps://dc1.corp.example:636'], base_dn: 'DC=corp,DC=example', "
    "id_attribute: mail, bind_dn: 'CN=svc,DC=corp,DC=example', bind_password: pw-secret-1"
)


def _load(tmp_path: Path, source: str = SOURCE + "}") -> Any:
    text = (
        "jobs:\n  - name: j\n    target: {base_url: 'http://127.0.0.1:9', api_key: k}\n"
        f"    sources:\n      - {source}\n"
    )
    return parse_config(text, origin="c.yaml", base_dir=tmp_path).jobs[0].sources[0]


def _config(**values: Any) -> LdapSourceConfig:
    fields = {
        "type": "ldap",
        "urls": ["ldap://127.0.0.1:389"],
        "base_dn": "dc=example,dc=com",
        "id_attribute": "mail",
        **values,
    }
    return LdapSourceConfig.model_validate(fields)


def test_loads_from_yaml_with_defaults(tmp_path: Path) -> None:
    source = _load(tmp_path)
    assert isinstance(source, LdapSourceConfig)
    assert source.flavor is Flavor.ACTIVE_DIRECTORY
    assert source.base_dn == ("DC=corp,DC=example",)
    assert source.page_size == 500
    assert source.timeout_s == 60
    assert source.tls_verify
    assert source.label == "dc1.corp.example"
    settings = source.settings()
    assert settings.person_filter == "(&(objectCategory=person)(objectClass=user))"
    assert settings.disabled_filter == "(userAccountControl:1.2.840.113556.1.4.803:=2)"
    assert settings.groups is GroupStrategy.IN_CHAIN


def test_presets_and_overrides() -> None:
    openldap = _config(flavor="openldap").settings()
    assert openldap.person_filter == "(objectClass=inetOrgPerson)"
    assert openldap.disabled_filter is None
    assert openldap.groups is GroupStrategy.WALK
    assert _config(flavor="freeipa").settings().disabled_filter == "(nsAccountLock=TRUE)"
    overridden = _config(
        flavor="active_directory",
        person_filter="(objectClass=person)",
        disabled_filter=None,
        group_strategy="walk",
    ).settings()
    assert overridden.person_filter == "(objectClass=person)"
    assert overridden.disabled_filter is None  # an explicit null turns the preset's off
    assert overridden.groups is GroupStrategy.WALK
    assert _config(flavor="openldap", disabled_filter="(x=1)").settings().disabled_filter == (
        "(x=1)"
    )


def test_tags_map_to_an_attribute_or_a_join() -> None:
    config = _config(tags={"title": "title", "groups": {"attribute": "memberOf", "join": ";"}})
    assert config.tag_rules() == (
        TagRule("groups", "memberOf", ";"),
        TagRule("title", "title", None),
    )


def test_base_dn_may_be_a_list() -> None:
    config = _config(base_dn=["ou=a,dc=x", "ou=b,dc=x"])
    assert config.base_dn == ("ou=a,dc=x", "ou=b,dc=x")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"urls": ["http://x"]}, "must be ldap://host"),
        ({"urls": ["ldap://x:99999"]}, "invalid port"),
        ({"urls": ["ldap://x/dc=x"]}, "put the search base in base_dn"),
        ({"urls": []}, "at least 1 item"),
        ({"user_filter": "department=*"}, "enclosed in parentheses"),
        ({"disabled_filter": "(&(a=1)"}, "invalid LDAP filter"),
        ({"bind_dn": "cn=x"}, "needs 'bind_password' or 'bind_password_file'"),
        ({"bind_password": "p"}, "needs a 'bind_dn'"),
        ({"bind_dn": "cn=x", "bind_password": "p", "bind_password_file": "f"}, "at most one"),
        ({"urls": ["ldaps://x"], "start_tls": True}, "start_tls is for ldap://"),
        ({"tls_verify": False, "ca_file": "ca.pem"}, "ca_file is only used"),
        ({"flavor": "novell"}, "active_directory"),
        ({"page_size": 0}, "greater than or equal to 1"),
        ({"tags": {"t": {"attribute": "x", "joiner": ";"}}}, "Extra inputs"),
        ({"id_attribute": ""}, "at least 1 character"),
    ],
)
def test_invalid_values_are_rejected(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _config(**values)


def test_errors_name_the_key_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"jobs\[0\]\.sources\[0\]\.page_size"):
        _load(tmp_path, SOURCE + ", page_size: -1}")


def test_password_is_masked_and_never_in_repr(tmp_path: Path) -> None:
    text = (
        "jobs:\n  - name: j\n    target: {base_url: 'http://127.0.0.1:9', api_key: k}\n"
        f"    sources:\n      - {SOURCE}}}\n"
    )
    config = parse_config(text, origin="c.yaml", base_dir=tmp_path)
    assert "pw-secret-1" not in repr(config)
    assert "pw-secret-1" not in repr(masked_config(config))
    assert config.jobs[0].sources[0].password().get_secret_value() == "pw-secret-1"


def test_password_file_is_read_at_load_and_paths_are_relative(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    source = _load(
        tmp_path,
        "{type: ldap, urls: ['ldap://h'], base_dn: 'dc=x', id_attribute: mail, "
        "bind_dn: 'cn=s', bind_password_file: pw, ca_file: ca.pem}",
    )
    assert source.password().get_secret_value() == "from-file"
    assert source.ca_file == tmp_path / "ca.pem"
    with pytest.raises(ConfigError, match="cannot read secret file"):
        _load(
            tmp_path,
            "{type: ldap, urls: ['ldap://h'], base_dn: 'dc=x', id_attribute: mail, "
            "bind_dn: 'cn=s', bind_password_file: missing}",
        )


def test_anonymous_bind_has_no_password() -> None:
    assert _config().password() is None


def test_label_is_the_name_when_given() -> None:
    assert _config(name="corp-ad").label == "corp-ad"
