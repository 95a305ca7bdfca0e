"""The pure half of the Entra source: queries and the mapping of Graph users."""

from __future__ import annotations

from datetime import date
from typing import Any

from syncd.model import RecordProblem, SourceUser
from syncd.sources.entra.graph import GraphUserMapper, build_queries, is_guest

SELECT = ("id", "userPrincipalName", "userType", "accountEnabled", "mail")


def mapper(**changes: Any) -> GraphUserMapper:
    options: dict[str, Any] = {
        "label": "corp",
        "id_attribute": "mail",
        "tags": {"dept": "department"},
        "active_from_attribute": "employeeHireDate",
        "active_to_attribute": "employeeLeaveDateTime",
        "include_guests": False,
        "lowercase": True,
    }
    options.update(changes)
    return GraphUserMapper(**options)


def test_users_without_filter_is_a_plain_query() -> None:
    (query,) = build_queries(select=SELECT, page_size=999, groups=(), user_filter=None)
    assert query.path == "/v1.0/users"
    assert dict(query.params) == {"$select": ",".join(SELECT), "$top": "999"}
    assert not query.advanced


def test_a_filter_or_a_group_scope_is_an_advanced_query() -> None:
    (filtered,) = build_queries(select=SELECT, page_size=10, groups=(), user_filter="a eq 'b'")
    assert filtered.advanced
    assert filtered.params["$count"] == "true"
    assert dict(filtered.headers) == {"ConsistencyLevel": "eventual"}
    scoped = build_queries(select=SELECT, page_size=10, groups=("g1", "g2"), user_filter=None)
    assert [q.path for q in scoped] == [
        "/v1.0/groups/g1/transitiveMembers/microsoft.graph.user",
        "/v1.0/groups/g2/transitiveMembers/microsoft.graph.user",
    ]
    assert all(q.advanced and q.params["$top"] == "10" for q in scoped)
    assert scoped[0].permission == "GroupMember.Read.All"


def test_select_lists_each_property_once() -> None:
    chosen = mapper(tags={"a": "mail", "b": "department"}).select()
    assert len(chosen) == len(set(chosen))
    assert set(chosen) == {
        "id", "userPrincipalName", "userType", "accountEnabled", "mail", "department",
        "employeeHireDate", "employeeLeaveDateTime",
    }  # fmt: skip


def test_guests_by_type_or_ext_upn() -> None:
    assert is_guest({"userType": "Guest"})
    assert is_guest({"userType": None, "userPrincipalName": "bob_x.com#EXT#@t.onmicrosoft.com"})
    assert not is_guest({"userType": "Member", "userPrincipalName": "ann@t.com"})


def test_a_user_is_mapped_with_utc_dates_and_disabled_flag() -> None:
    item = mapper().map(
        {
            "id": "1",
            "userPrincipalName": "Ann@T.com",
            "mail": " Ann@T.com ",
            "department": "R&D",
            "accountEnabled": False,
            "employeeHireDate": "2024-01-31T22:00:00-03:00",
            "employeeLeaveDateTime": "2025-06-30T00:00:00Z",
        }
    )
    assert isinstance(item, SourceUser)
    assert item.end_user == "ann@t.com"
    assert dict(item.tags) == {"dept": "R&D"}
    assert item.active_from == date(2024, 2, 1)
    assert item.active_to == date(2025, 6, 30)
    assert item.enabled is False
    assert str(item.origin) == "corp: Ann@T.com (id 1)"


def test_bad_values_are_problems_naming_the_property() -> None:
    m = mapper()
    missing = m.map({"id": "2", "userPrincipalName": "x@t.com", "mail": None})
    assert isinstance(missing, RecordProblem)
    assert "'mail'" in missing.message
    bad_date = m.map({"id": "3", "mail": "y@t.com", "employeeHireDate": "soon"})
    assert isinstance(bad_date, RecordProblem)
    assert "property 'employeeHireDate'" in bad_date.message


def test_properties_null_on_every_user_are_reported() -> None:
    m = mapper()
    m.start_read()
    assert m.never_filled() == []  # nothing read: nothing to say
    for index in range(3):
        m.map({"id": str(index), "mail": f"u{index}@t.com", "employeeHireDate": "2024-01-01"})
    assert m.never_filled() == ["department", "employeeLeaveDateTime"]
    m.start_read()
    m.map(
        {"id": "9", "mail": "z@t.com", "department": "Ops", "employeeLeaveDateTime": "2030-01-01"}
    )
    assert m.never_filled() == ["employeeHireDate"]


def test_guests_are_skipped_and_counted() -> None:
    m = mapper()
    assert m.map({"id": "1", "mail": "g@x.com", "userType": "Guest"}) is None
    assert m.guests_skipped == 1
    included = mapper(include_guests=True).map({"id": "1", "mail": "g@x.com", "userType": "Guest"})
    assert isinstance(included, SourceUser)


def test_user_type_is_selected_only_to_leave_guests_out() -> None:
    assert "userType" in mapper().select()
    assert "userType" not in mapper(include_guests=True).select()


# ----------------------------------------------------- object-valued properties

EXTENSIONS = {"extensionAttribute1": "CC-1042", "extensionAttribute2": None}


def test_a_dotted_path_selects_the_parent_and_maps_the_field() -> None:
    dotted = mapper(tags={"cc": "onPremisesExtensionAttributes.extensionAttribute1"})
    assert "onPremisesExtensionAttributes" in dotted.select()
    assert not any("." in name for name in dotted.select())
    user = {"id": "1", "mail": "a@x.com", "onPremisesExtensionAttributes": EXTENSIONS}
    item = dotted.map(user)
    assert isinstance(item, SourceUser)
    assert dict(item.tags) == {"cc": "CC-1042"}


def test_a_dotted_path_with_a_null_parent_or_field_leaves_the_tag_out() -> None:
    dotted = mapper(tags={"cc": "onPremisesExtensionAttributes.extensionAttribute2"})
    for parent in (None, EXTENSIONS):
        item = dotted.map({"id": "1", "mail": "a@x.com", "onPremisesExtensionAttributes": parent})
        assert isinstance(item, SourceUser)
        assert dict(item.tags) == {}


def test_an_object_where_a_value_is_expected_is_a_problem_naming_user_and_property() -> None:
    whole = mapper(tags={"cc": "extension_abc_costCenter"})
    user = {
        "id": "1",
        "userPrincipalName": "a@x.com",
        "mail": "a@x.com",
        "extension_abc_costCenter": {"code": "42"},
    }
    problem = whole.map(user)
    assert isinstance(problem, RecordProblem)
    assert "a@x.com" in str(problem.origin)
    assert "'extension_abc_costCenter' is an object" in problem.message
    assert "extension_abc_costCenter.code" in problem.message
    assert "{" not in problem.message


def test_a_list_of_objects_is_a_problem_and_a_list_of_texts_a_value() -> None:
    listed = mapper(tags={"ids": "extension_abc_list"})
    objects = listed.map({"id": "1", "mail": "a@x.com", "extension_abc_list": [{"k": "v"}]})
    assert isinstance(objects, RecordProblem)
    assert "a list of objects" in objects.message
    texts = listed.map({"id": "1", "mail": "a@x.com", "extension_abc_list": ["b", "a"]})
    assert isinstance(texts, SourceUser)
    assert dict(texts.tags) == {"ids": "a;b"}


def test_a_dotted_path_into_a_text_is_a_problem() -> None:
    into_text = mapper(tags={"x": "department.name"})
    problem = into_text.map({"id": "1", "mail": "a@x.com", "department": "Sales"})
    assert isinstance(problem, RecordProblem)
    assert "'department' is not an object" in problem.message
