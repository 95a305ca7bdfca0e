"""The Entra source against the Graph emulator over HTTPS, through the real MSAL and httpx."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.daemon.metrics import DaemonMetrics
from syncd.emulator.graph import GraphEmulator, GraphOperation
from syncd.emulator.server import EndpointFaults
from syncd.errors import SourceError, SourceUnavailableError
from syncd.model import RecordProblem, SourceUser
from syncd.sources.entra.source import GRAPH_RETRIES, PAGE_BUDGET_S, EntraSource
from tests.sources.entra.support import (
    LIMITED_CLIENT_ID,
    SECRET,
    entra_config,
    entra_source,
    users,
)

GROUP_A = "a0000000-0000-4000-8000-00000000000a"
GROUP_B = "b0000000-0000-4000-8000-00000000000b"
GROUP_C = "c0000000-0000-4000-8000-00000000000c"
GROUP_D = "d0000000-0000-4000-8000-00000000000d"


def read(source: EntraSource) -> list[SourceUser | RecordProblem]:
    with source as opened:
        return list(opened.read())


def user_items(items: list[SourceUser | RecordProblem]) -> list[SourceUser]:
    assert all(isinstance(item, SourceUser) for item in items), items
    return [item for item in items if isinstance(item, SourceUser)]


# ------------------------------------------------------------------- listing


def test_many_pages_are_followed_with_one_request_each(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.set_users(users(2500))
    source = entra_source(graph, graph_ca_file)
    found = user_items(read(source))
    assert len({u.end_user for u in found}) == 2500
    assert source.requests == 3  # ceil(2500 / 999)
    assert graph.calls()["list_users"] == 3
    first, *rest = graph.queries
    assert first.params["$top"] == "999"
    assert all(set(q.params) == {"$skiptoken"} for q in rest)  # nextLink followed verbatim


def test_select_is_exactly_what_the_mapping_reads(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.set_users(users(3))
    source = entra_source(
        graph,
        graph_ca_file,
        id_attribute="mail",
        tags={"dept": "department", "country": "country", "title": "jobTitle"},
        active_from_attribute="createdDateTime",
        active_to_attribute="employeeLeaveDateTime",
    )
    found = user_items(read(source))
    selected = graph.queries[0].params["$select"].split(",")
    assert sorted(selected) == sorted(
        ["id", "userPrincipalName", "userType", "accountEnabled", "mail", "department",
         "country", "jobTitle", "createdDateTime", "employeeLeaveDateTime"]
    )  # fmt: skip
    assert dict(found[1].tags) == {"country": "US", "dept": "Sales", "title": "Manager"}
    assert found[0].active_from is not None
    assert found[0].active_from.isoformat() == "2019-03-01"


def test_dates_are_taken_as_utc_dates(graph: GraphEmulator, graph_ca_file: Path) -> None:
    graph.set_users(
        users(1, employeeHireDate="2024-03-01T23:30:00-05:00", employeeLeaveDateTime=None)
    )
    (user,) = user_items(read(entra_source(graph, graph_ca_file)))
    assert user.active_from is not None
    assert user.active_from.isoformat() == "2024-03-02"


def test_a_null_hire_date_leaves_active_from_to_the_first_seen_date(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.set_users(users(2, employeeHireDate=None))
    found = user_items(read(entra_source(graph, graph_ca_file)))
    assert [u.active_from for u in found] == [None, None]


def test_disabled_users_are_disabled_and_guests_left_out_unless_asked(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.set_users(
        [
            *users(2),
            *users(1, start=2, enabled=False),
            *users(1, start=3, guest=True),
            *users(1, start=4, userType="Guest"),
        ]
    )
    found = {u.end_user: u for u in user_items(read(entra_source(graph, graph_ca_file)))}
    assert len(found) == 3
    assert found["user0000002@contoso.example"].enabled is False
    assert found["user0000000@contoso.example"].enabled is True
    with_guests = user_items(read(entra_source(graph, graph_ca_file, include_guests=True)))
    assert len(with_guests) == 5


def test_a_user_without_the_id_property_is_a_problem_naming_the_user(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.set_users([*users(1), *users(1, start=1, mail=None)])
    items = read(entra_source(graph, graph_ca_file, id_attribute="mail"))
    problems = [item for item in items if isinstance(item, RecordProblem)]
    assert len(problems) == 1
    assert "user0000001@contoso.example" in str(problems[0])
    assert "'mail'" in str(problems[0])


def test_a_dotted_tag_reads_a_field_of_an_object_property_through_graph(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    extensions = {"extensionAttribute1": "CC-7", "extensionAttribute2": "x"}
    graph.set_users(users(2, onPremisesExtensionAttributes=extensions))
    tags = {"cc": "onPremisesExtensionAttributes.extensionAttribute1"}
    found = user_items(read(entra_source(graph, graph_ca_file, tags=tags)))
    assert [dict(user.tags) for user in found] == [{"cc": "CC-7"}] * 2
    (query,) = graph.queries
    assert "onPremisesExtensionAttributes" in query.params["$select"].split(",")


def test_a_filter_is_sent_as_an_advanced_query_on_every_page(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.set_users(users(30))
    source = entra_source(graph, graph_ca_file, filter="department ne 'Sales'", page_size=5)
    found = user_items(read(source))
    assert len(found) == 30 - 4  # every 8th user is in Sales
    assert len(graph.queries) == 6
    assert all(q.consistency_level == "eventual" for q in graph.queries)
    assert all(q.params["$count"] == "true" for q in graph.queries)


def test_count_is_added_to_a_next_link_that_lost_it(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.set_users(users(12))
    graph.count_in_next_link = False
    source = entra_source(graph, graph_ca_file, filter="department ne 'Sales'", page_size=5)
    assert len(user_items(read(source))) == 12 - 2
    assert all(q.params["$count"] == "true" for q in graph.queries)
    assert len(graph.queries) == 2


# -------------------------------------------------------------------- groups


def test_nested_groups_with_a_cycle_give_each_member_once(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.set_users(users(12))
    ids = [u["id"] for u in users(12)]
    graph.set_groups(
        {
            GROUP_A: [ids[0], ids[1], GROUP_B],
            GROUP_B: [ids[2], ids[3], GROUP_C],
            GROUP_C: [ids[4], GROUP_A],  # a cycle back to A
            GROUP_D: [ids[4], ids[5], ids[6]],  # ids[4] is in both scopes
        }
    )
    source = entra_source(graph, graph_ca_file, groups=[GROUP_A, GROUP_D], page_size=2)
    found = user_items(read(source))
    assert sorted(u.end_user for u in found) == [f"user{i:07d}@contoso.example" for i in range(7)]
    paths = {q.path for q in graph.queries}
    assert paths == {
        f"/v1.0/groups/{GROUP_A}/transitiveMembers/microsoft.graph.user",
        f"/v1.0/groups/{GROUP_D}/transitiveMembers/microsoft.graph.user",
    }
    assert len(graph.queries) == 3 + 2  # pages of 2: five members of A, three of D
    assert graph.calls()["list_users"] == 0  # never a request per user
    assert all(q.consistency_level == "eventual" for q in graph.queries)
    first_pages = [q for q in graph.queries if "$select" in q.params]
    assert all(q.params["$top"] == "2" and q.params["$count"] == "true" for q in first_pages)


def test_a_missing_scope_group_fails_the_read(graph: GraphEmulator, graph_ca_file: Path) -> None:
    graph.set_users(users(2))
    graph.set_groups({GROUP_A: [users(1)[0]["id"]]})
    source = entra_source(graph, graph_ca_file, groups=[GROUP_A, GROUP_B])
    with pytest.raises(SourceError, match=f"scope group {GROUP_B} not found"):
        read(source)


def test_a_403_names_the_missing_permission(graph: GraphEmulator, graph_ca_file: Path) -> None:
    graph.set_users(users(2))
    graph.set_groups({GROUP_A: [users(1)[0]["id"]]})
    source = entra_source(graph, graph_ca_file, client_id=LIMITED_CLIENT_ID, groups=[GROUP_A])
    with pytest.raises(SourceError, match=r"GroupMember\.Read\.All") as caught:
        read(source)
    assert "HTTP 403" in str(caught.value)
    # The same app can list /users: it has User.Read.All.
    assert len(user_items(read(entra_source(graph, graph_ca_file, client_id=LIMITED_CLIENT_ID))))


def test_a_property_null_on_every_user_is_a_warning_naming_the_permission(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.set_users(users(3, employeeLeaveDateTime="2030-01-01T00:00:00Z"))
    source = entra_source(graph, graph_ca_file, active_to_attribute="employeeLeaveDateTime")
    with source:
        found = user_items(list(source.read()))
        warnings = source.diagnostics()
    assert [u.active_to for u in found] == [None, None, None]  # hidden without the permission
    assert len(warnings) == 1
    assert "employeeLeaveDateTime" in warnings[0]
    assert "User-LifeCycleInfo.Read.All" in warnings[0]


# ------------------------------------------------------------------ failures


def test_throttling_is_retried_honouring_retry_after(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.set_users(users(10))
    graph.set_faults(GraphOperation.LIST_USERS, EndpointFaults(throttle_next=3, retry_after_s=0.2))
    source = entra_source(graph, graph_ca_file, page_size=5)
    started = time.monotonic()
    found = user_items(read(source))
    assert len(found) == 10
    assert time.monotonic() - started >= 0.55  # three waits of Retry-After 0.2 s
    assert source.requests == 2 + 3


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_on_a_later_page_is_retried(
    graph: GraphEmulator, graph_ca_file: Path, status: int
) -> None:
    graph.set_users(users(10))
    graph.fail_page(2, status, times=2)
    source = entra_source(graph, graph_ca_file, page_size=4)
    assert len(user_items(read(source))) == 10
    assert source.requests == 3 + 2


def test_a_page_that_keeps_failing_raises_after_the_users_read(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.set_users(users(10))
    graph.fail_page(2, 503)
    received: list[SourceUser | RecordProblem] = []
    source = entra_source(graph, graph_ca_file, page_size=4)
    failing = pytest.raises(SourceUnavailableError, match="still failing after 5 attempts")
    with source, failing:
        received.extend(source.read())
    assert len(received) == 4


def test_a_page_that_keeps_failing_fails_within_30_s_at_the_default_settings(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.set_users(users(3))
    graph.fail_page(1, 429, retry_after=1)  # fits the budget: waited out, every time
    source = EntraSource(entra_config(graph, graph_ca_file), lowercase=True, retry=GRAPH_RETRIES)
    started = time.monotonic()
    with pytest.raises(SourceUnavailableError, match="still failing after 5 attempts"):
        read(source)
    assert 3.9 <= time.monotonic() - started < PAGE_BUDGET_S
    assert source.requests == GRAPH_RETRIES.attempts


def test_a_retry_after_longer_than_the_budget_fails_the_read_at_once(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.set_users(users(3))
    graph.fail_page(1, 429, retry_after=120)
    source = EntraSource(entra_config(graph, graph_ca_file), lowercase=True, retry=GRAPH_RETRIES)
    started = time.monotonic()
    with pytest.raises(SourceUnavailableError) as caught:
        read(source)
    assert time.monotonic() - started < 5
    assert "Microsoft Graph asks to wait 120 s" in str(caught.value)
    assert "the next run retries" in str(caught.value)
    assert source.requests == 1


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP (the kernel's backlog) and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


def test_a_graph_that_never_answers_fails_within_the_page_budget(
    graph: GraphEmulator, graph_ca_file: Path, silent_port: int
) -> None:
    # timeout_s stays 30 s and 4 retries are allowed: ~150 s without a total budget.
    budget = dataclasses.replace(GRAPH_RETRIES, backoff_base_s=0.01, deadline_s=1.5)
    config = entra_config(graph, graph_ca_file, graph_url=f"https://127.0.0.1:{silent_port}")
    source = EntraSource(config, lowercase=True, retry=budget)
    started = time.monotonic()
    with pytest.raises(SourceUnavailableError, match="still failing after"):
        read(source)
    assert time.monotonic() - started < 3.5


def test_the_page_budget_is_30_s_and_retry_after_is_not_cut_short() -> None:
    assert GRAPH_RETRIES.deadline_s == PAGE_BUDGET_S == 30
    assert GRAPH_RETRIES.max_retry_after_s >= PAGE_BUDGET_S


def test_a_next_link_to_another_host_fails_the_read_without_contacting_it(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.set_users(users(6))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen(4)
        other.setblocking(False)
        graph.next_link_base = f"https://127.0.0.1:{other.getsockname()[1]}"
        received: list[SourceUser | RecordProblem] = []
        source = entra_source(graph, graph_ca_file, page_size=4)
        with source, pytest.raises(SourceError, match=r"nextLink points at https://127\.0\.0\.1:"):
            received.extend(source.read())
        with pytest.raises(BlockingIOError):
            other.accept()  # nobody connected: the token never went there
    assert len(received) == 4  # the first page, then the read failed
    assert source.requests == 1


def test_a_next_link_that_repeats_fails_the_read_instead_of_looping(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.set_users(users(10))
    graph.repeat_next_link = True
    source = entra_source(graph, graph_ca_file, page_size=4)
    with pytest.raises(SourceError, match="nextLink repeats or never ends"):
        read(source)
    assert source.requests == 2


def test_a_listing_longer_than_the_page_cap_fails_the_read(
    graph: GraphEmulator, graph_ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("syncd.sources.entra.source.DEFAULT_MAX_PAGES", 3)
    graph.set_users(users(10))
    source = entra_source(graph, graph_ca_file, page_size=2)
    with pytest.raises(SourceError, match=r"never ends \(after 3 pages\)"):
        read(source)
    assert source.requests == 3


# -------------------------------------------------------------------- tokens


def test_the_token_is_cached_across_reads_and_renewed_when_refused(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    graph.set_users(users(3))
    with entra_source(graph, graph_ca_file) as source:
        for _ in range(3):
            assert len(list(source.read())) == 3
        assert graph.login_calls["token"] == 1
        assert graph.login_calls["discovery"] == 1
        graph.login.revoke_all()  # Graph now answers 401 to the cached token
        assert len(list(source.read())) == 3
    assert graph.login_calls["token"] == 2


def test_no_secret_in_repr_or_errors(graph: GraphEmulator, graph_ca_file: Path) -> None:
    source = entra_source(graph, graph_ca_file, client_secret=SECRET + "-wrong")
    with pytest.raises(SourceError) as caught:
        read(source)
    for text in (repr(source), str(caught.value), repr(entra_config(graph, graph_ca_file))):
        assert SECRET not in text


def test_the_daemon_metric_carries_the_credential_expiry(
    graph: GraphEmulator, graph_ca_file: Path
) -> None:
    metrics = DaemonMetrics(["applied"])
    source = entra_source(graph, graph_ca_file, client_secret_expires="2031-02-03")
    metrics.observe_credentials("corp", [source, object()])  # a source without the hook
    text = metrics.render().decode()
    assert (
        'syncd_credential_expiry_timestamp_seconds{job="corp",source="corp-entra"} 1.9278432e+09'
        in text
    )
