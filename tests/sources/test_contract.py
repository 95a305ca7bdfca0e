"""The contract every source type keeps, run over each registered type.

A source type joins the suite with a :class:`ContractCase` in ``CASES``: it knows how
to build that source over real data (a file for CSV; a real directory server for the
types that talk to one) holding given users, one bad record, a read that breaks
half-way, or nothing readable at all. A registered type without a case fails
:func:`test_every_registered_source_type_has_a_contract_case`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import get_args

import pytest

from syncd.config import masked_config, parse_config
from syncd.errors import SourceError
from syncd.model import RecordProblem, SourceUser
from syncd.ports import Source
from syncd.sources import SourceContext, build_source, source_types
from syncd.sources.csv import CsvSource, CsvSourceConfig
from syncd.sources.entra import EntraSourceConfig
from syncd.sources.ldap import LdapSourceConfig
from tests.sources.entra import support as entra
from tests.sources.ldap.servers import SLAPD_PEOPLE_DN, DirectoryServer, start_slapd


@dataclass(frozen=True)
class Person:
    """A directory entry as a test writes it: an id and one tag."""

    end_user: str
    department: str


PEOPLE = [
    Person("Ada.Lovelace@Example.com", "Research"),
    Person("alan.turing@example.com", "Research"),
    Person("grace.hopper@example.com", "Navy"),
]


class ContractCase:
    """How to build one source type for the contract tests (override every method)."""

    type_name: str
    secrets: tuple[str, ...] = ()
    """Secret values the built sources are configured with (never in repr or errors)."""

    def holding(self, tmp_path: Path, people: list[Person]) -> Source:
        """A source whose directory holds exactly ``people`` (tag ``department``)."""
        raise NotImplementedError

    def with_bad_record(self, tmp_path: Path, people: list[Person]) -> Source:
        """``people`` plus one record without an id, after the first person."""
        raise NotImplementedError

    def breaking_after(self, tmp_path: Path, people: list[Person]) -> Source:
        """A read that yields ``people`` and then fails (the rest is unreadable)."""
        raise NotImplementedError

    def unreadable(self, tmp_path: Path) -> Source:
        """A source that cannot be read at all."""
        raise NotImplementedError

    def config_text(self, tmp_path: Path) -> str:
        """A ``sources:`` entry (YAML flow mapping) with every secret of the type set."""
        raise NotImplementedError

    def prepare(self, request: pytest.FixtureRequest) -> None:
        """Get the fixtures the case needs (a directory server); most need none."""


class CsvCase(ContractCase):
    type_name = "csv"

    def _source(self, path: Path) -> Source:
        config = CsvSourceConfig(
            type="csv", path=path, id_column="email", tags={"department": "dept"}
        )
        return build_source(config, SourceContext(lowercase=True))

    def _write(self, tmp_path: Path, lines: list[str]) -> Path:
        path = tmp_path / "people.csv"
        path.write_text("email,dept\n" + "".join(f"{line}\n" for line in lines))
        return path

    def holding(self, tmp_path: Path, people: list[Person]) -> Source:
        return self._source(self._write(tmp_path, [f"{p.end_user},{p.department}" for p in people]))

    def with_bad_record(self, tmp_path: Path, people: list[Person]) -> Source:
        lines = [f"{p.end_user},{p.department}" for p in people]
        lines.insert(1, ",NoId")
        return self._source(self._write(tmp_path, lines))

    def breaking_after(self, tmp_path: Path, people: list[Person]) -> Source:
        lines = [f"{p.end_user},{p.department}" for p in people]
        lines.append('"never.closed@example.com,Lost')  # a quote open to the end of file
        lines.append("after.the.quote@example.com,Lost")
        return self._source(self._write(tmp_path, lines))

    def unreadable(self, tmp_path: Path) -> Source:
        return self._source(tmp_path / "missing.csv")

    def config_text(self, tmp_path: Path) -> str:
        return "{type: csv, path: people.csv, id_column: email}"


class CsvInPartsCase(CsvCase):
    """The CSV source reading even a small file in two parts (the second by a forked
    child), as it reads a large one."""

    def _source(self, path: Path) -> Source:
        config = CsvSourceConfig(
            type="csv", path=path, id_column="email", tags={"department": "dept"}
        )
        return CsvSource(config, lowercase=True, parts_min_bytes=0)


class CsvByColumnsCase(CsvCase):
    """The CSV source reading even a small plain file by columns (Arrow), here."""

    def _source(self, path: Path) -> Source:
        config = CsvSourceConfig(
            type="csv", path=path, id_column="email", tags={"department": "dept"}
        )
        return CsvSource(config, lowercase=True, parts_min_bytes=1 << 62, columns_min_bytes=0)


class LdapCase(ContractCase):
    """A real slapd; each source reads its own fresh OU of it."""

    type_name = "ldap"
    account = "cn=contract,dc=example,dc=com"
    password = "contract-Ldap-Secret-91"  # the bind password of ``account``
    wrong_password = "contract-Wrong-Secret-17"
    secrets = (password, wrong_password)
    _ous = count()

    def prepare(self, request: pytest.FixtureRequest) -> None:
        self.server: DirectoryServer = request.getfixturevalue("contract_slapd")

    def _ou(self, people: list[Person], *, bad_after_first: bool = False) -> str:
        ou = f"ou=contract{next(self._ous)},{SLAPD_PEOPLE_DN}"
        name = ou[3:].split(",", maxsplit=1)[0]
        ldif = [f"dn: {ou}\nobjectClass: organizationalUnit\nou: {name}\n"]
        entries = [(re.sub(r"[^a-z0-9]", "-", p.end_user.lower()), p) for p in people]
        for index, (uid, p) in enumerate(entries):
            ldif.append(
                f"dn: uid={uid},{ou}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\n"
                f"sn: {uid}\nmail: {p.end_user}\ndepartmentNumber: {p.department}\n"
            )
            if bad_after_first and index == 0:
                ldif.append(
                    f"dn: uid=no-mail,{ou}\nobjectClass: inetOrgPerson\nuid: no-mail\n"
                    "cn: no-mail\nsn: no-mail\ndepartmentNumber: Lost\n"
                )
        self.server.add_ldif("\n".join(ldif))
        return ou

    def _source(self, base_dn: str | list[str], *, password: str | None = None) -> Source:
        config = LdapSourceConfig.model_validate(
            {
                "type": "ldap",
                "name": "corp-ldap",
                "flavor": "openldap",
                "urls": [self.server.ldap_url],
                "start_tls": True,
                "ca_file": self.server.ca_file,
                "bind_dn": self.account,
                "bind_password": password or self.password,
                "base_dn": base_dn,
                "id_attribute": "mail",
                "tags": {"department": "departmentNumber"},
            }
        )
        return build_source(config, SourceContext(lowercase=True))

    def holding(self, tmp_path: Path, people: list[Person]) -> Source:
        return self._source(self._ou(people))

    def with_bad_record(self, tmp_path: Path, people: list[Person]) -> Source:
        return self._source(self._ou(people, bad_after_first=True))

    def breaking_after(self, tmp_path: Path, people: list[Person]) -> Source:
        # The second base does not exist: its search fails after the first one's entries.
        return self._source([self._ou(people), f"ou=gone,{SLAPD_PEOPLE_DN}"])

    def unreadable(self, tmp_path: Path) -> Source:
        return self._source(SLAPD_PEOPLE_DN, password=self.wrong_password)

    def config_text(self, tmp_path: Path) -> str:
        return (
            "{type: ldap, urls: ['ldaps://127.0.0.1:1'], base_dn: 'dc=example,dc=com', "
            f"id_attribute: mail, bind_dn: 'cn=sync,dc=example,dc=com', "
            f"bind_password: {self.password}}}"
        )


class EntraCase(ContractCase):
    """The Graph emulator over HTTPS, through MSAL; each source replaces its users."""

    type_name = "entra"
    wrong_secret = "contract-Wrong-Entra-Secret-3"
    secrets = (entra.SECRET, wrong_secret)

    def prepare(self, request: pytest.FixtureRequest) -> None:
        self.server: entra.GraphServer = request.getfixturevalue("contract_graph")
        self.server.emulator.reset()

    def _graph_users(self, people: list[Person]) -> list[dict[str, object]]:
        return [
            entra.make_graph_user(index, mail=p.end_user, department=p.department)
            for index, p in enumerate(people)
        ]

    def _source(self, *, page_size: int = 999, secret: str = entra.SECRET) -> Source:
        config = EntraSourceConfig.model_validate(
            {
                "type": "entra",
                "name": "corp-entra",
                "tenant_id": entra.TENANT,
                "client_id": entra.CLIENT_ID,
                "client_secret": secret,
                "authority_url": self.server.emulator.url,
                "graph_url": self.server.emulator.url,
                "ca_file": str(self.server.ca_file),
                "id_attribute": "mail",
                "tags": {"department": "department"},
                "page_size": page_size,
            }
        )
        return build_source(config, SourceContext(lowercase=True))

    def holding(self, tmp_path: Path, people: list[Person]) -> Source:
        self.server.emulator.clear_page_faults()
        self.server.emulator.set_users(self._graph_users(people))
        return self._source()

    def with_bad_record(self, tmp_path: Path, people: list[Person]) -> Source:
        users = self._graph_users(people)
        users.insert(1, entra.make_graph_user(99, mail=None, department="Lost"))
        self.server.emulator.set_users(users)
        return self._source()

    def breaking_after(self, tmp_path: Path, people: list[Person]) -> Source:
        lost = entra.make_graph_user(98, mail="lost@example.com", department="Lost")
        self.server.emulator.set_users([*self._graph_users(people), lost])
        self.server.emulator.fail_page(2, 403)  # the page after the people is refused
        return self._source(page_size=len(people))

    def unreadable(self, tmp_path: Path) -> Source:
        return self._source(secret=self.wrong_secret)

    def config_text(self, tmp_path: Path) -> str:
        return (
            f"{{type: entra, tenant_id: {entra.TENANT}, client_id: {entra.CLIENT_ID}, "
            f"client_secret: {entra.SECRET}}}"
        )


CASES: dict[str, ContractCase] = {
    "csv": CsvCase(),
    "csv-in-parts": CsvInPartsCase(),
    "csv-by-columns": CsvByColumnsCase(),
    "ldap": LdapCase(),
    "entra": EntraCase(),
}


@pytest.fixture(scope="module")
def contract_graph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[entra.GraphServer]:
    """A Graph emulator over HTTPS for the Entra case."""
    server = entra.start_graph(tmp_path_factory.mktemp("contract-graph"))
    try:
        yield server
    finally:
        server.emulator.stop()


@pytest.fixture(scope="module")
def contract_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectoryServer]:
    """A slapd for the LDAP case, with a bind account whose password is the case's secret."""
    server = start_slapd(tmp_path_factory.mktemp("contract-slapd"))
    try:
        server.add_ldif(
            f"dn: {LdapCase.account}\nobjectClass: organizationalRole\n"
            f"objectClass: simpleSecurityObject\ncn: contract\nuserPassword: {LdapCase.password}\n"
        )
        yield server
    finally:
        server.stop()


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> ContractCase:
    chosen = CASES[request.param]
    chosen.prepare(request)
    return chosen


def _read(source: Source) -> list[SourceUser | RecordProblem]:
    with source as opened:
        return list(opened.read())


def _normalised(people: list[Person]) -> list[str]:
    return [p.end_user.strip().lower() for p in people]


def _users(items: list[SourceUser | RecordProblem]) -> list[SourceUser]:
    return [item for item in items if isinstance(item, SourceUser)]


def test_every_registered_source_type_has_a_contract_case() -> None:
    assert {source_type.name for source_type in source_types()} == {
        case.type_name for case in CASES.values()
    }


def test_registered_configs_are_discriminated_by_their_type_name() -> None:
    for source_type in source_types():
        annotation = source_type.config.model_fields["type"].annotation
        assert get_args(annotation) == (source_type.name,)


def test_streams_every_user_normalised_with_tags_and_origin(
    case: ContractCase, tmp_path: Path
) -> None:
    source = case.holding(tmp_path, PEOPLE)
    items = _read(source)
    users = _users(items)
    assert len(items) == len(users)
    assert sorted(u.end_user for u in users) == sorted(_normalised(PEOPLE))
    tags = {u.end_user: dict(u.tags) for u in users}
    assert tags["grace.hopper@example.com"] == {"department": "Navy"}
    assert all(str(u.origin).startswith(source.label) for u in users)


def test_read_is_a_stream_not_a_list(case: ContractCase, tmp_path: Path) -> None:
    with case.holding(tmp_path, PEOPLE) as source:
        stream = source.read()
        assert isinstance(stream, Iterator)
        first = next(stream)
        assert isinstance(first, SourceUser)


def test_a_bad_record_is_a_problem_with_a_location_and_the_rest_is_read(
    case: ContractCase, tmp_path: Path
) -> None:
    source = case.with_bad_record(tmp_path, PEOPLE)
    items = _read(source)
    problems = [item for item in items if isinstance(item, RecordProblem)]
    assert len(problems) == 1
    assert str(problems[0]).startswith(source.label)
    assert problems[0].origin.source == source.label
    assert str(problems[0]) != f"{source.label}: {problems[0].message}"  # it has a location
    assert sorted(u.end_user for u in _users(items)) == sorted(_normalised(PEOPLE))


def test_a_read_that_breaks_half_way_raises_after_the_records_read(
    case: ContractCase, tmp_path: Path
) -> None:
    received: list[SourceUser | RecordProblem] = []

    def read_all(source: Source) -> None:
        received.extend(source.read())  # keeps what came before the error

    with case.breaking_after(tmp_path, PEOPLE) as source, pytest.raises(SourceError):
        read_all(source)
    assert sorted(u.end_user for u in _users(received)) == sorted(_normalised(PEOPLE))


def test_an_unreadable_source_raises_a_source_error(case: ContractCase, tmp_path: Path) -> None:
    with case.unreadable(tmp_path) as source, pytest.raises(SourceError) as caught:
        list(source.read())
    assert str(caught.value)


def test_a_source_can_be_read_again_while_open(case: ContractCase, tmp_path: Path) -> None:
    with case.holding(tmp_path, PEOPLE) as source:
        first = [u.end_user for u in _users(list(source.read()))]
        second = [u.end_user for u in _users(list(source.read()))]
    assert sorted(first) == sorted(second) == sorted(_normalised(PEOPLE))


def test_no_secret_in_repr_label_or_errors(case: ContractCase, tmp_path: Path) -> None:
    if not case.secrets:
        pytest.skip(f"a {case.type_name} source is configured without secrets")
    shown: list[str] = []
    for build in (case.holding, case.breaking_after):
        source = build(tmp_path, PEOPLE)
        shown += [repr(source), source.label]
        try:
            _read(source)
        except SourceError as error:
            shown.append(str(error))
    unreadable = case.unreadable(tmp_path)
    with pytest.raises(SourceError) as caught:
        _read(unreadable)
    shown += [repr(unreadable), str(caught.value)]
    for secret in case.secrets:
        assert all(secret not in text for text in shown)


def test_check_config_masks_every_secret_of_the_type(case: ContractCase, tmp_path: Path) -> None:
    text = (
        "jobs:\n  - name: j\n    target: {base_url: 'http://127.0.0.1:9', api_key: k-contract}\n"
        f"    sources:\n      - {case.config_text(tmp_path)}\n"
    )
    config = parse_config(text, origin="contract", base_dir=tmp_path)
    dumped = repr(masked_config(config)) + repr(config) + str(config)
    assert "**********" in repr(masked_config(config))  # the key is there, masked
    for secret in (*case.secrets, "k-contract"):
        assert secret not in dumped


def test_build_source_uses_the_builder_registered_for_the_type(tmp_path: Path) -> None:
    config = CsvSourceConfig(type="csv", path=tmp_path / "x.csv", id_column="email")
    built = build_source(config, SourceContext(lowercase=False))
    assert type(built).__name__ == "CsvSource"
    with pytest.raises(TypeError, match="no source type 'nosuch'"):
        build_source(config.model_copy(update={"type": "nosuch"}), SourceContext(lowercase=False))
