"""A job's identity rules: what decides the ``end_user`` a person gets (pure).

``identity.lowercase``, the normalisation, and each source's type and id field. When
they change between two runs, every person gets another ``end_user``: the plan would
end all of them and insert them again. The runner keeps the rules of the last applied
run in the state store and hands the differences to the guard, which holds the plan.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping

from syncd.config import JobConfig

_NORMALISATION = "trim+nfc+printable"
"""Names how source ids are normalised (:func:`syncd.mapping.normalize_end_user`); change
it with the normalisation, so that jobs hold instead of renaming everyone."""


_DEFAULTS: dict[str, object] = {"encoding": "utf-8"}
"""Source keys that decide how an id's bytes become text (a CSV file read as latin-1
instead of utf-8 gives ``josÃ©`` instead of ``josé``: another end_user), with the value
their absence means. They are recorded only when they differ from it, so the rules of a
job with the defaults stay as they were."""


def identity_rules(job: JobConfig) -> dict[str, object]:
    """What decides the ``end_user`` a person gets in ``job``, as JSON data.

    ``identity.lowercase``, the normalisation, and each source's type, id field (every
    ``id_*`` key of its config: ``id_column``, ``id_attribute``, ...) and, where it has
    one, its ``encoding``. Tags and dates are not identity: changing them updates users,
    which the update guard judges.
    """
    sources: dict[str, object] = {}
    for source in job.sources:
        fields = source.model_dump(mode="json")
        rules: dict[str, object] = {
            "type": source.type,
            **{key: value for key, value in sorted(fields.items()) if key.startswith("id_")},
        }
        for key, default in _DEFAULTS.items():
            value = fields.get(key)
            if isinstance(value, str) and _codec(value) != _codec(str(default)):
                rules[key] = _codec(value)  # "UTF8" and "utf-8" are one encoding
        sources[source.label] = rules
    return {
        "lowercase": job.identity.lowercase,
        "normalisation": _NORMALISATION,
        "sources": sources,
    }


def _codec(name: str) -> str:
    """The codec's canonical name (``UTF8`` -> ``utf-8``); the name itself if unknown."""
    try:
        return codecs.lookup(name).name
    except LookupError:
        return name


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def identity_rule_changes(
    previous: Mapping[str, object], current: Mapping[str, object]
) -> tuple[str, ...]:
    """How ``current`` identity rules differ from ``previous`` ones, for people.

    Both are :func:`identity_rules` data. A source added or removed is not
    an identity change (its users are inserted or removed, which the other checks
    judge); a source whose type, id field or encoding changed is. A key the previous
    rules do not have is unknown, not changed (rules recorded by an older syncd lack
    the keys added since), except the keys of :data:`_DEFAULTS`, whose absence means
    their default.
    """
    changes: list[str] = []
    for key in ("lowercase", "normalisation"):
        if previous.get(key) != current.get(key):
            name = "identity.lowercase" if key == "lowercase" else "normalisation of end_user"
            changes.append(f"{name}: {_show(previous.get(key))} -> {_show(current.get(key))}")
    old_sources = previous.get("sources")
    new_sources = current.get("sources")
    if isinstance(old_sources, Mapping) and isinstance(new_sources, Mapping):
        for label, before, rules in _paired(old_sources, new_sources):
            if not isinstance(before, Mapping) or not isinstance(rules, Mapping):
                continue
            for key in sorted(before.keys() | (rules.keys() & _DEFAULTS.keys())):
                old, new = before.get(key, _DEFAULTS.get(key)), rules.get(key, _DEFAULTS.get(key))
                if old != new:
                    changes.append(f"source {label} {key}: {_show(old)} -> {_show(new)}")
    return tuple(changes)


def _paired(
    old: Mapping[str, object], new: Mapping[str, object]
) -> list[tuple[str, object, object]]:
    """The sources of two rule sets side by side: by label, or, when as many sources
    are there but their labels changed (a renamed file, an edited ``name:``), by
    position, so that renaming a source in the same edit as its id field is seen."""
    if old.keys() == new.keys() or len(old) != len(new):
        return [(label, old.get(label), rules) for label, rules in new.items()]
    return [
        (label if label == old_label else f"{old_label} (now {label})", before, rules)
        for (old_label, before), (label, rules) in zip(old.items(), new.items(), strict=True)
    ]
