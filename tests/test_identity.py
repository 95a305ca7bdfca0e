"""A job's identity rules, and how a change to them is described."""

from __future__ import annotations

from pathlib import Path

from syncd.config import parse_config
from syncd.identity import identity_rule_changes, identity_rules

RULES = {
    "lowercase": True,
    "normalisation": "trim+nfc+printable",
    "sources": {"hr.csv": {"type": "csv", "id_column": "email"}},
}


def test_identity_rule_changes_name_what_changed() -> None:
    changed = {
        **RULES,
        "lowercase": False,
        "sources": {
            "hr.csv": {"type": "csv", "id_column": "upn"},
            "new.csv": {"type": "csv", "id_column": "mail"},
        },
    }
    assert identity_rule_changes(RULES, changed) == (
        "identity.lowercase: true -> false",
        "source hr.csv id_column: 'email' -> 'upn'",
    )
    assert identity_rule_changes(RULES, RULES) == ()


def test_identity_rules_hold_every_id_field_and_nothing_else(tmp_path: Path) -> None:
    config = parse_config(
        """
jobs:
  - name: corp
    target: {base_url: "http://127.0.0.1:9", api_key: k-123}
    identity: {lowercase: false}
    sources:
      - {type: csv, name: hr, path: hr.csv, id_column: email, tags: {d: Dept}}
      - {type: ldap, name: ad, urls: ["ldap://127.0.0.1:1"], base_dn: "dc=x",
         id_attribute: mail}
""",
        origin="test",
        base_dir=tmp_path,
    )
    assert identity_rules(config.jobs[0]) == {
        "lowercase": False,
        "normalisation": "trim+nfc+printable",
        "sources": {
            "hr": {"type": "csv", "id_column": "email"},
            "ad": {"type": "ldap", "id_attribute": "mail"},
        },
    }


def test_a_source_added_or_removed_is_not_an_identity_change() -> None:
    added = {**RULES, "sources": {**RULES["sources"], "b.csv": {"type": "csv", "id_column": "x"}}}
    assert identity_rule_changes(RULES, added) == ()
    assert identity_rule_changes(added, RULES) == ()


def _csv_job(tmp_path: Path, encoding: str) -> dict[str, object]:
    config = parse_config(
        f"""
jobs:
  - name: corp
    target: {{base_url: "http://127.0.0.1:9", api_key: k-123}}
    sources: [{{type: csv, name: hr, path: hr.csv, id_column: email, encoding: {encoding}}}]
""",
        origin="test",
        base_dir=tmp_path,
    )
    return identity_rules(config.jobs[0])


def test_a_changed_csv_encoding_is_an_identity_change(tmp_path: Path) -> None:
    # The same bytes read as another encoding give other ids (josé -> josÃ©).
    utf8, latin1 = _csv_job(tmp_path, "utf-8"), _csv_job(tmp_path, "latin-1")
    assert utf8 == _csv_job(tmp_path, "UTF8")  # the default is not recorded, however spelt
    assert "encoding" not in utf8["sources"]["hr"]  # type: ignore[index]
    assert identity_rule_changes(utf8, latin1) == ("source hr encoding: 'utf-8' -> 'iso8859-1'",)
    assert identity_rule_changes(latin1, utf8) == ("source hr encoding: 'iso8859-1' -> 'utf-8'",)
    assert identity_rule_changes(latin1, _csv_job(tmp_path, "ISO-8859-1")) == ()


def test_a_key_the_recorded_rules_lack_is_not_a_change() -> None:
    # Rules recorded before a key existed: the first run after an upgrade must not hold.
    after = {**RULES, "sources": {"hr.csv": {**RULES["sources"]["hr.csv"], "id_x": "y"}}}
    assert identity_rule_changes(RULES, after) == ()
    moved = {**RULES, "sources": {"hr.csv": {"type": "ldap", "id_attribute": "mail"}}}
    assert identity_rule_changes(RULES, moved) == (
        "source hr.csv id_column: 'email' -> None",
        "source hr.csv type: 'csv' -> 'ldap'",
    )


def test_a_source_renamed_in_the_same_edit_as_its_id_field_is_still_an_identity_change() -> None:
    # users.csv moved to people.csv while id_column went from email to employee_id:
    # the labels differ, but one source was replaced by one source.
    renamed = {**RULES, "sources": {"people.csv": {"type": "csv", "id_column": "employee_id"}}}
    assert identity_rule_changes(RULES, renamed) == (
        "source hr.csv (now people.csv) id_column: 'email' -> 'employee_id'",
    )
    switched = {**RULES, "sources": {"corp-entra": {"type": "entra", "id_attribute": "mail"}}}
    changes = identity_rule_changes(RULES, switched)
    assert "source hr.csv (now corp-entra) type: 'csv' -> 'entra'" in changes
    renamed_only = {**RULES, "sources": {"people.csv": {"type": "csv", "id_column": "email"}}}
    assert identity_rule_changes(RULES, renamed_only) == ()
