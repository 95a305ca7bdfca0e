"""The users of one platform listing, converted cheaply and without duplicates.

:class:`ListedUsers` takes the users a :class:`~syncd.platform.listing.PageReader`
decoded, page after page, and makes :class:`~syncd.model.PlatformUser` values of them:
a million turns of one loop, so each turn is a few dict lookups and one struct. It
also finds the end_users listed twice, without a set of a million names (~40 MB): see
:meth:`ListedUsers.result`.

Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date
from itertools import chain, compress
from operator import attrgetter
from typing import Final

import msgspec

from syncd.errors import PlatformError
from syncd.model import PlatformUser, SourceUser, Tags, make_tags, parse_api_date
from syncd.platform.listing import CHUNK_BYTES, ListedUser, PageReader, bad_tag

__all__ = ["ListedUsers", "decode_users"]

_MAX_CACHED: Final = 100_000
"""Entries of the tag and date caches of one listing (users that share nothing must not
build a second copy of the list)."""

# Without ``known`` (or once the walk is lost): a bitmap of the names seen, 2**23 bits
# (1 MB). At a million users about one name in twenty finds its bit set by another;
# those are counted exactly.
_SEEN_BITS: Final = 1 << 23
_SEEN_MASK: Final = _SEEN_BITS - 1

_NEAR: Final = 4096
"""How far from where the listing stood in the known order a known user out of that
order is looked for (batches of a first sync land a few thousand apart)."""

_SEARCH_BUDGET: Final = 16
"""Keys compared in such searches, per listed user, before the walk is given up (an
order that has nothing to do with the known one must not cost 2 * _NEAR compares per
user)."""

_MISSES_IN_A_ROW: Final = 64
"""Known users in a row that are not the walk's next key before the walk is given up:
a listing that never continues where the last search left it gains nothing from it."""

_TAGS_DECODER = msgspec.json.Decoder(dict[str, str])
_end_user = attrgetter("end_user")


class _End(str):
    """The key after the last known key: equal to no name, so the loop needs no bound test."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return False

    def __ne__(self, other: object) -> bool:
        return True

    __hash__ = str.__hash__


_END: Final = _End()


class ListedUsers:
    """The users of one listing, page after page (a :class:`~.listing.UserSink`).

    ``known`` (the desired users, keyed by normalised end_user): a listed name is
    stored as ``known[name].end_user`` (the SourceUser's own string object) when that
    user exists and its ``end_user`` equals the name; otherwise as the listed string.
    So a million names are not held twice. Both paths below keep exactly that rule.

    A platform lists its users in the order it got them, which for users a sync wrote
    is mostly the order of ``known`` (batches of a first sync may land a little out of
    turn). So each listed name is first compared with the next user's ``end_user`` in
    that order, a sequential walk instead of a random hash probe (ten times faster at a
    million users). A name out of that order is looked up by hash, then looked for near
    the walk's place, and the walk goes on from where it was found. Each listed
    position is marked, so a name listed twice is seen; names whose position is not
    known are counted exactly at the end.

    A listing in another order (re-sorted, reversed, paged differently) would make
    every name a search: once the searches cost _SEARCH_BUDGET compares per listed
    user, or _MISSES_IN_A_ROW known users in a row miss the walk, the walk is given up
    for the rest of the listing, and each name costs one hash lookup in ``known`` (as
    without the walk) plus a bit in the seen bitmap, where the positions marked so far
    are carried over.

    Per listing, tag sets are cached by their JSON text and dates by their text (the
    values shared with :func:`~syncd.model.make_tags` and
    :func:`~syncd.model.parse_api_date`).
    """

    def __init__(self, known: Mapping[str, SourceUser] | None = None) -> None:
        self._known = known if known else None
        self._tags: dict[bytes, Tags] = {}
        self._dates: dict[str | None, date] = {}
        self._users: list[PlatformUser] = []
        self._pending: list[PlatformUser] | None = None
        # Which names were seen (set by _reset_tracking):
        self._doubtful: list[str] = []  # names that may be listed twice
        # The known users' end_user strings in the known order (_END for one that is
        # not its key), then _END; None without known or once the walk is lost. Built
        # with the first user listed (_keys_due): an empty project (a first sync)
        # never pays for a million of them.
        self._keys: list[str] | None = None
        self._keys_due = False
        self._marks = bytearray()  # walking: a byte per known position listed
        self._seen = bytearray()  # not walking: the bitmap of names seen
        self._walk = 0  # where the listing stands in the known order
        self._listed = 0  # users converted (the search budget grows with them)
        self._searched = 0  # keys compared by _position
        self._placed = 0  # names that took _place
        self._in_row = 0  # known users in a row that missed the walk
        self._after_place = -1  # the walk's place after the last _place
        self._reset_tracking()

    def page(
        self, *, expected_size: int | None = None, chunk_bytes: int = CHUNK_BYTES
    ) -> PageReader:
        """A reader for the next page (or a new attempt at a page whose body broke off:
        the users read from the broken one are dropped)."""
        if self._pending is not None:
            self._reset_tracking()
            self._track(self._users)
        self._pending = []
        return PageReader(self, self._pending, expected_size=expected_size, chunk_bytes=chunk_bytes)

    def result(self) -> tuple[list[PlatformUser], list[str]]:
        """Every listed user, once, and the end_users listed more than once.

        A repeated end_user keeps its last occurrence, at the place of its first (as a
        dict keyed by name would); the second list has one entry per dropped
        occurrence, in listing order. The names that may repeat (a position marked
        twice, a bit set twice, a name whose position is not known) are counted
        exactly over the whole list, so a false alarm costs one pass, never a user.
        """
        users = self._users
        if not self._doubtful:
            return users, []
        doubtful = set(self._doubtful)
        counts = Counter(filter(doubtful.__contains__, map(_end_user, users)))
        repeated = {name for name, count in counts.items() if count > 1}
        if not repeated:
            return users, []
        last = {user.end_user: user for user in users if user.end_user in repeated}
        kept: list[PlatformUser] = []
        dropped: list[str] = []
        placed: set[str] = set()
        for user in users:
            name = user.end_user
            if name in repeated:
                if name in placed:
                    dropped.append(name)
                    continue
                placed.add(name)
                user = last[name]  # noqa: PLW2901 - the last occurrence wins
            kept.append(user)
        return kept, dropped

    def commit(self, users: list[PlatformUser]) -> None:
        """A page was read whole: its users belong to the listing."""
        if self._users:
            self._users.extend(users)
        else:
            self._users = users  # one page (the documented API): no copy
        self._pending = None

    def convert(self, wires: list[ListedUser], out: list[PlatformUser]) -> None:
        """Append ``wires`` to ``out`` as PlatformUsers (the hot loop: a million turns).

        Everything a turn needs is a local. A date is never false, so ``or`` falls
        through to the slow path only when a cache misses (tags can be the empty tuple,
        so they are tested against None). The tags-and-dates lines are the same as in
        :meth:`_convert_hashed` on purpose: a helper call per user would cost ~0.1 s a
        million; change both together.
        """
        self._listed += len(wires)
        if self._keys_due and wires:
            self._build_keys()
        keys = self._keys
        if keys is None:
            self._convert_hashed(wires, out)
            return
        tags_of = self._tags.get
        date_of = self._dates.get
        new_user = PlatformUser
        append = out.append
        place = self._place
        marks = self._marks
        doubtful = self._doubtful
        walk = self._walk
        remaining = iter(wires)
        for wire in remaining:
            name = wire.end_user
            key = keys[walk]
            if name == key:
                name = key
                if marks[walk]:
                    doubtful.append(name)
                marks[walk] = 1
                walk += 1
            else:
                name, walk = place(name, walk)
                if walk < 0:  # the walk is lost: this user and the rest by hash
                    self._convert_hashed(chain((wire,), remaining), out)
                    return
            text = bytes(wire.tags)
            tags = tags_of(text)
            if tags is None:
                tags = self._tags_for(text, name)
            active_from = date_of(wire.active_from) or self._date_for(
                name, "active_from", wire.active_from
            )
            text_to = wire.active_to
            active_to = (
                None
                if text_to is None
                else date_of(text_to) or self._date_for(name, "active_to", text_to)
            )
            append(new_user(name, tags, active_from, active_to))
        self._walk = walk

    def _convert_hashed(self, wires: Iterable[ListedUser], out: list[PlatformUser]) -> None:
        """:meth:`convert` without the walk: without ``known``, or once the walk is lost
        (one hash lookup per name; duplicates through the seen bitmap)."""
        tags_of = self._tags.get
        date_of = self._dates.get
        new_user = PlatformUser
        append = out.append
        seen = self._seen
        doubtful = self._doubtful
        source_of = self._known.get if self._known is not None else None
        for wire in wires:
            name = wire.end_user
            if source_of is not None:
                source = source_of(name)
                if source is not None and source.end_user == name:
                    name = source.end_user
            text = bytes(wire.tags)
            tags = tags_of(text)
            if tags is None:
                tags = self._tags_for(text, name)
            active_from = date_of(wire.active_from) or self._date_for(
                name, "active_from", wire.active_from
            )
            text_to = wire.active_to
            active_to = (
                None
                if text_to is None
                else date_of(text_to) or self._date_for(name, "active_to", text_to)
            )
            slot = hash(name) & _SEEN_MASK
            byte = slot >> 3
            bit = 1 << (slot & 7)
            bits = seen[byte]
            if bits & bit:
                doubtful.append(name)
            else:
                seen[byte] = bits | bit
            append(new_user(name, tags, active_from, active_to))

    # ------------------------------------------------------------ duplicates

    def _reset_tracking(self) -> None:
        """Forget which names were seen (a new listing, or a page read again)."""
        self._doubtful = []
        self._walk = self._listed = self._searched = self._placed = self._in_row = 0
        self._after_place = -1
        self._keys = None
        self._marks = bytearray()
        self._keys_due = self._known is not None
        self._seen = bytearray() if self._keys_due else bytearray(_SEEN_BITS // 8)

    def _build_keys(self) -> None:
        """The walk's keys and marks, for the first users listed."""
        assert self._known is not None
        self._keys_due = False
        # A user's end_user, not its key: a walk hit then stores what _place would.
        # The runner's keys are the end_user objects, so the list compare (identity
        # first, in C) confirms them without reading a string; else _END marks a
        # user whose end_user is not its key.
        keys = [source.end_user for source in self._known.values()]
        if keys != [*self._known]:
            keys = [
                end_user if (end_user := source.end_user) == key else _END
                for key, source in self._known.items()
            ]
        keys.append(_END)
        self._keys = keys
        self._marks = bytearray(len(keys))

    def _lose_walk(self) -> None:
        """Give up the walk for the rest of the listing: the names at the positions
        marked so far go into the seen bitmap, which takes over finding duplicates."""
        assert self._keys is not None
        seen = bytearray(_SEEN_BITS // 8)
        for name in compress(self._keys, self._marks):
            slot = hash(name) & _SEEN_MASK
            seen[slot >> 3] |= 1 << (slot & 7)
        self._seen = seen
        self._keys = None
        self._marks = bytearray()

    def _track(self, users: list[PlatformUser]) -> None:
        """Mark ``users`` as seen again (the pages kept when a later one is read again):
        through :meth:`convert` itself, so that both agree. Rare, so not fast."""
        encode = msgspec.json.encode
        wires = [
            ListedUser(
                user.end_user,
                msgspec.Raw(encode(dict(user.tags))),
                user.active_from.isoformat(),
                None if user.active_to is None else user.active_to.isoformat(),
            )
            for user in users
        ]
        self.convert(wires, [])

    def _place(self, name: str, walk: int) -> tuple[str, int]:
        """A name that is not the walk's next one: its string to keep, and where the
        walk goes on; a negative place when the walk is lost (then nothing is recorded:
        the caller converts the name again without the walk). Off the hot path (a few
        users in a hundred)."""
        assert self._known is not None
        assert self._keys is not None
        keys = self._keys
        self._placed += 1
        source = self._known.get(name)
        if source is None or source.end_user != name:
            # Not a known user: compared with every listed name at the end.
            self._doubtful.append(name)
            return name, walk
        self._in_row = self._in_row + 1 if walk == self._after_place else 1
        position = -1 if self._in_row > _MISSES_IN_A_ROW else self._position(name, walk)
        if position < 0:
            self._lose_walk()
            return name, -1
        if self._marks[position]:
            self._doubtful.append(name)
        self._marks[position] = 1
        self._after_place = position + 1
        return keys[position], position + 1

    def _position(self, name: str, walk: int) -> int:
        """The position of known user ``name`` (-1 once searching costs too much).

        The listing usually skipped a few known users (not on the platform yet) or came
        back to a batch that landed late, or pages came in another order: the name is
        looked for within _NEAR after the walk's place, then before it, then in rings
        four times wider each, after and before (list.index compares in C), so a user
        d positions away costs about 3 * d compares on either side. Every compare
        counts; once they cost _SEARCH_BUDGET per listed user (plus a start of
        8 * _NEAR), the search gives up and so does the walk.
        """
        assert self._keys is not None
        keys = self._keys
        last = len(keys) - 1  # _END
        inner, outer = 0, _NEAR
        while inner < last:
            rings = (min(walk + inner, last), min(walk + outer, last)), (
                max(walk - outer, 0),
                max(walk - inner, 0),
            )
            for start, stop in rings:
                if start >= stop:
                    continue
                if self._searched > _SEARCH_BUDGET * self._listed + 8 * _NEAR:
                    return -1
                try:
                    position = keys.index(name, start, stop)
                except ValueError:
                    self._searched += stop - start
                    continue
                self._searched += position - start + 1
                return position
            inner, outer = outer, 4 * outer
        return -1

    # ------------------------------------------------------------ slow paths

    def _tags_for(self, text: bytes, name: str) -> Tags:
        """The canonical tags of a tag set's JSON text not seen yet in this listing."""
        try:
            pairs = _TAGS_DECODER.decode(text)
        except msgspec.ValidationError as error:
            raise PlatformError(
                f"list: the platform returned user {name!r} with an invalid "
                f"{bad_tag(text, str(error))}: {str(error).split(' - at ', 1)[0]}"
            ) from None
        tags = make_tags(pairs)
        if len(self._tags) < _MAX_CACHED:
            self._tags[text] = tags
        return tags

    def _date_for(self, name: str, field: str, text: str | None) -> date:
        """A date not seen yet in this listing; a missing or bad one names the user."""
        if text is None:
            raise PlatformError(f"list: the platform returned user {name!r} without {field}")
        try:
            value = parse_api_date(text)
        except ValueError as error:
            raise PlatformError(
                f"list: the platform returned user {name!r} with an invalid {field}: {error}"
            ) from None
        if len(self._dates) < _MAX_CACHED:
            self._dates[text] = value
        return value


def decode_users(
    content: bytes,
    known: Mapping[str, SourceUser] | None = None,
    *,
    chunk_bytes: int = CHUNK_BYTES,
) -> tuple[list[PlatformUser], list[str], str | None]:
    """Decode one whole list response: its users, the end_users listed more than once,
    and the next page's cursor (see :class:`ListedUsers` and
    :class:`~syncd.platform.listing.PageReader`)."""
    listing = ListedUsers(known)
    reader = listing.page(expected_size=len(content), chunk_bytes=chunk_bytes)
    reader.feed(content)
    cursor = reader.finish()
    users, duplicates = listing.result()
    return users, duplicates, cursor
