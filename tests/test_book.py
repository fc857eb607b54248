"""supervisor.book over the C kernel (native/mp_book.c): a reference model, exact decimal
ordering, the venue's text kept, bad input refused with the book untouched, large books."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.book import OrderBook


def dec(value: str | float) -> Decimal:
    """A level field's decimal value as its JSON text says (a float: its shortest repr)."""
    return Decimal(str(value))


class Model:
    """The reference: Decimal price -> the last level written there; sorted on demand."""

    def __init__(self) -> None:
        self.sides: tuple[dict, dict] = ({}, {})

    def load(self, bids: list, asks: list) -> None:
        self.sides = tuple({dec(lv[0]): lv for lv in side if dec(lv[1]) != 0}
                           for side in (bids, asks))

    def apply(self, bids: list, asks: list) -> None:
        for book, levels in zip(self.sides, (bids, asks), strict=True):
            for lv in levels:
                if dec(lv[1]) == 0:
                    book.pop(dec(lv[0]), None)
                else:
                    book[dec(lv[0])] = lv

    def levels(self) -> tuple[list, list]:
        bids, asks = self.sides
        return ([bids[k] for k in sorted(bids, reverse=True)], [asks[k] for k in sorted(asks)])

    def crossed(self) -> bool:
        bids, asks = self.sides
        return bool(bids) and bool(asks) and max(bids) >= min(asks)


def price_text(ticks: int, decimals: int, pad: int) -> str | float:
    """ticks * 0.01 written with ``decimals`` (>= 2) decimals plus ``pad`` trailing zeros;
    decimals 5 and 6 write it with an exponent and as a JSON number (the kernel's general
    parser rather than its compact fast path)."""
    if decimals == 5:
        return f"{ticks}{'0' * pad}e-{2 + pad}"
    if decimals == 6:
        return ticks / 100
    return f"{Decimal(ticks).scaleb(-2):.{decimals}f}" + "0" * pad


sizes = st.sampled_from(["0", "0.000", "1", "2.5", "10", "0.001", "0e5", "00000000000000000000",
                         "0.00000000000000000001"])
levels = st.lists(st.tuples(st.integers(1, 400), st.integers(2, 6), st.integers(0, 2), sizes),
                  max_size=12).map(lambda raw: [[price_text(t, d, p), s] for t, d, p, s in raw])
actions = st.lists(st.tuples(st.sampled_from(["apply", "apply", "apply", "load"]), levels,
                             levels), min_size=1, max_size=25)


@settings(max_examples=300, deadline=None)
@given(actions)
def test_random_sequences_match_the_reference_model(steps):
    book, ref = OrderBook("X"), Model()
    for kind, bids, asks in steps:
        if kind == "load":
            crossed = book.load(bids, asks, 1)
            ref.load(bids, asks)
        else:
            crossed = book.apply(bids, asks, 2)
            ref.apply(bids, asks)
        want = ref.levels()
        assert book.snapshot_levels() == want
        # the kernel read back (BookSide.top) equals what the book hands out after a load
        assert (book.bids.top(100), book.asks.top(100)) == (want[0], want[1])
        assert crossed == book.crossed() == ref.crossed()
        assert (len(book.bids), len(book.asks)) == (len(want[0]), len(want[1]))
        assert book.top(3) == (want[0][:3], want[1][:3])
        assert book.bids.best() == (want[0][0] if want[0] else None)


def test_decimal_ordering_is_exact():
    book = OrderBook("X")
    book.load([["1.10", "1"], ["1.1", "2"]], [], 1)  # one level: the last text wins
    assert book.bids.top(5) == [["1.1", "2"]]
    book.apply([["1.100", "3"]], [], 2)
    assert book.bids.top(5) == [["1.100", "3"]]
    # one float, two decimals: a float-keyed book would merge these
    book.apply([["0.1", "1"], ["0.10000000000000001", "1"]], [], 3)
    assert len(book.bids) == 3
    assert [lv[0] for lv in book.bids.top(5)] == ["1.100", "0.10000000000000001", "0.1"]
    book.apply([["1.1000000000000000000000", "0"]], [], 4)  # trailing zeros past 18 decimals
    assert [lv[0] for lv in book.bids.top(5)] == ["0.10000000000000001", "0.1"]
    # exponents, integer prices, and 20 integer digits order like their values
    book.load([["1e2", "1"], ["99.99", "1"], ["100.5", "1"], ["12345678901234567890.5", "1"]],
              [["0.000000000000000001", "1"], ["1E-17", "1"]], 5)
    assert [lv[0] for lv in book.bids.top(9)] == ["12345678901234567890.5", "100.5", "1e2",
                                                  "99.99"]
    assert [lv[0] for lv in book.asks.top(9)] == ["0.000000000000000001", "1E-17"]
    book.load([["1234567890123456789", "1"], ["123456789012345678.9", "1"]], [], 6)  # 19 digits
    assert [lv[0] for lv in book.bids.top(9)] == ["1234567890123456789", "123456789012345678.9"]
    book.load([["9999999999999999999.5", "1"], ["1e19", "1"], ["12345678901234567890.5", "1"],
               ["1e-18", "1"]], [], 7)  # the largest and smallest scales
    assert [lv[0] for lv in book.bids.top(9)] == ["12345678901234567890.5", "1e19",
                                                  "9999999999999999999.5", "1e-18"]
    with pytest.raises(ValueError, match="exact range"):
        book.apply([["1e20", "1"]], [], 8)


def test_any_json_layout_reads_like_the_compact_one():
    from supervisor._kernels import lib

    compact, spaced = OrderBook("X"), OrderBook("X")
    text = b'[[["1.5","2","x"],["1.4","0"]],[["2","1"]]]'
    assert lib.mp_book_apply(compact._c, text, len(text)) == 0
    text = b' [ [ [ "1.5" , "2" , "x" ] ,\n[ "1.4", "0" ] ] ,\t[ [ "2" , "1" ] ] ] '
    assert lib.mp_book_apply(spaced._c, text, len(text)) == 0
    assert spaced.snapshot_levels() == compact.snapshot_levels() == ([["1.5", "2", "x"]],
                                                                     [["2", "1"]])
    for bad in (b'[[["1","1"]]]', b'[[],[],[]]', b'[[],[]]x', b'[[["1","1"],],[]]', b'[[[',
                b'', b'[[["1","1"]] [], ]'):
        assert lib.mp_book_apply(spaced._c, bad, len(bad)) == lib.MP_BOOK_ESHAPE, bad
    assert spaced.snapshot_levels() == compact.snapshot_levels()


def test_venue_text_and_extra_fields_are_kept():
    book = OrderBook("X")
    book.load([["41006.8", "0.60038921", "0", "1"]], [["41007.0", "1.5", "0", "3"]], 1)
    assert book.top(1) == ([["41006.8", "0.60038921", "0", "1"]],
                           [["41007.0", "1.5", "0", "3"]])
    book.apply([[41006.5, 2.0]], [["41007.00", "2"]], 2)  # JSON numbers (deribit-like)
    assert book.snapshot_levels() == ([["41006.8", "0.60038921", "0", "1"], [41006.5, 2.0]],
                                      [["41007.00", "2"]])
    long = ["1.5", "1", "a-rather-long-extra-field-that-does-not-fit-inline" * 3]
    book.apply([long], [], 3)
    assert book.bids.top(9)[-1] == long
    book.apply([["1.5", "2"]], [], 4)  # heap text replaced by inline text
    assert book.bids.top(9)[-1] == ["1.5", "2"]


def test_removing_absent_levels_is_fine():
    book = OrderBook("X")
    assert book.apply([["1", "0"]], [["2", "0.000"]], 1) is False
    book.load([["1", "1"]], [["2", "1"]], 2)
    book.apply([["1.5", "0"], ["0.5", "0e3"]], [["3", "-0"]], 3)
    assert book.snapshot_levels() == ([["1", "1"]], [["2", "1"]]) and book.seq == 3


def test_load_drops_zero_sizes_keeps_last_duplicate_and_any_input_order():
    want = ([["3", "1"], ["2", "9"], ["1", "1"]], [["4", "1"], ["5", "1"]])
    for bids, asks in [
        ([["3", "1"], ["2", "5"], ["2", "9"], ["1.5", "0"], ["1", "1"]], [["4", "1"], ["5", "1"]]),
        ([["1", "1"], ["2", "5"], ["3", "1"], ["2.0", "0"], ["2", "9"]], [["5", "1"], ["4", "1"]]),
    ]:
        book = OrderBook("X")
        book.load(bids, asks, 1)
        assert book.snapshot_levels() == want
    book.bids.load([["7", "1"], ["6", "1"]])  # one side only
    assert book.snapshot_levels() == ([["7", "1"], ["6", "1"]], want[1])
    assert book.crossed()
    book.invalidate()
    assert book.snapshot_levels() == ([], []) and not book.synced and not book.crossed()


@pytest.mark.parametrize("price, error", [
    ("nan", "non-finite"), ("NaN", "non-finite"), ("inf", "non-finite"),
    ("-Infinity", "non-finite"), ("", "bad price"), ("abc", "bad price"),
    ("1.2.3", "bad price"), ("1e", "bad price"), ("--1", "bad price"), (" 1", "bad price"),
    ("0x10", "bad price"), ("1_000", "bad price"), ("1\\u0030", "bad price"),
    ("1e400", "exact range"), ("1e99999999999", "exact range"), ("1e+", "bad price"),
    ("0.0000000000000000001", "exact range"),
    ("123456789012345678901", "exact range"), (None, "bad price"), (True, "bad price"),
])
def test_bad_prices_are_refused_and_leave_the_book_as_it_was(price, error):
    book = OrderBook("X")
    book.load([["1", "1"]], [["2", "1"]], 1)
    with pytest.raises(ValueError, match=error):
        book.apply([["1.5", "1"], [price, "1"]], [["1", "0"]], 2)  # good levels first
    with pytest.raises(ValueError, match=error):
        book.load([[price, "1"]], [], 3)
    assert book.snapshot_levels() == ([["1", "1"]], [["2", "1"]]) and book.seq == 1


@pytest.mark.parametrize("levels, error", [
    ([["1", "x"]], "bad size"), ([["1", ""]], "bad size"), ([["1", "nan"]], "bad size"),
    ([["1", None]], "bad size"), ([["1"]], "malformed"), ([[]], "malformed"),
    ([["1", ["2"]]], "malformed"), ([["1", {"a": 1}]], "malformed"), (["1"], "malformed"),
    ([{"p": "1"}], "malformed"), ([["1", "1", ["x"]]], "malformed"),
])
def test_malformed_levels_are_refused(levels, error):
    book = OrderBook("X")
    with pytest.raises(ValueError, match=error) as exc:
        book.apply(levels, [], 1)
    assert len(str(exc.value)) < 300  # quotes the level, not the whole input
    with pytest.raises(ValueError, match=error):
        book.check(levels, [])
    assert book.snapshot_levels() == ([], [])


def test_values_json_cannot_carry_are_type_errors():
    book = OrderBook("X")
    with pytest.raises(TypeError):
        book.apply([[object(), "1"]], [], 1)
    with pytest.raises(TypeError):
        book.apply([[2 ** 70, "1"]], [], 1)


def test_large_books():
    n = 200_000
    bids = [[f"{99999.5 - i * 0.5:.1f}", "1"] for i in range(n)]
    asks = [[f"{100000.5 + i * 0.5:.1f}", "2"] for i in range(n)]
    book = OrderBook("X")
    assert book.load(bids, asks, 1) is False
    assert (len(book.bids), len(book.asks)) == (n, n)
    got_bids, got_asks = book.snapshot_levels()
    assert got_bids == bids and got_asks == asks
    book.apply([], [["100000", "1"]], 2)  # inside the spread: one level at the top
    assert book.asks.best() == ["100000", "1"] and not book.crossed()
    assert book.apply([["100000.5", "1"]], [], 3) is True  # best bid above best ask
    book.apply(bids[::2], [["100000", "0"]] + [[p, "0"] for p, _ in asks], 4)
    assert len(book.asks) == 0 and len(book.bids) == n + 1
    book.apply([[p, "0"] for p, _ in bids], [], 5)
    assert book.bids.top(5) == [["100000.5", "1"]]


def test_many_books_come_and_go():
    for i in range(2000):
        book = OrderBook(str(i))
        book.load([[str(i), "1", "x" * 100]], [], i)
    assert book.bids.best() == [str(i), "1", "x" * 100]


def test_threads_reading_their_own_books_never_see_each_others_levels():
    import threading

    def reader(tag: str, bad: list) -> None:
        book = OrderBook(tag)
        want = [[f"{i}.5", "1", tag] for i in range(300, 0, -1)]
        book.load(want, [], 1)
        for _ in range(300):
            if book.bids.top(300) != want:
                bad.append(tag)

    bad: list = []
    threads = [threading.Thread(target=reader, args=(str(i), bad)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []


def test_a_snapshot_read_right_after_a_load_is_the_loaded_lists():
    bids, asks = [["3", "1"], ["2", "1"]], [["4", "1"], ["5", "1"]]
    book = OrderBook("X")
    book.load(bids, asks, 1)
    got = book.snapshot_levels()
    assert got == (bids, asks) and got[0][0] is bids[0]  # no read-back of the kernel
    got[0].clear()  # the caller's copy: the book is not affected
    assert book.snapshot_levels() == (bids, asks) and book.top(1) == ([["3", "1"]], [["4", "1"]])
    book.apply([["2.5", "1"]], [], 2)
    assert book.snapshot_levels()[0] == [["3", "1"], ["2.5", "1"], ["2", "1"]]
    book.load([["2", "1"], ["3", "1"]], [["4", "0"]], 3)  # not best first, a zero size: read back
    assert book.snapshot_levels() == ([["3", "1"], ["2", "1"]], [])
    book.bids.load([["9", "1"]])
    book.asks.load([["10", "1"], ["11", "1"]])
    assert book.snapshot_levels() == ([["9", "1"]], [["10", "1"], ["11", "1"]])
    book.asks.apply([["10", "0"]])
    assert book.snapshot_levels() == ([["9", "1"]], [["11", "1"]])
    book.invalidate()
    assert book.snapshot_levels() == ([], [])


def test_mutated_input_gives_a_result_or_an_error_never_a_crash():
    """Random byte edits of valid and odd inputs straight into the kernel (20k cases)."""
    import random

    from supervisor._kernels import lib

    seeds = [b'[[["99.5","3"],["99.4","0"]],[["100.15","1","x","4"]]]',
             b'[ [ [ 1.5e2 , "2" ] ] , [ ["-1","0.0"] ] ]', b'[[["1e19","1"]],[["1e-18","1e3"]]]',
             b'[[],[]]', b'[[["1","1","\\""]],[]]']
    alphabet = b'[]",.0123456789eE+-naif \\x'
    rng = random.Random(7)
    book = OrderBook("X")
    errors = {lib.MP_BOOK_ESHAPE, lib.MP_BOOK_EPRICE, lib.MP_BOOK_ENONFINITE, lib.MP_BOOK_ERANGE,
              lib.MP_BOOK_ESIZE}
    for i in range(20_000):
        text = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(0, 3)):
            pos = rng.randrange(len(text) + 1)
            op = rng.randrange(3)
            if op == 0 and pos < len(text):
                text[pos] = rng.choice(alphabet)
            elif op == 1 and pos < len(text):
                del text[pos]
            else:
                text.insert(pos, rng.choice(alphabet))
        data = bytes(text)
        if i % 3 == 0:
            rc = lib.mp_book_load(book._c, data, len(data), rng.randint(1, 3))
            assert rc in errors or 0 <= rc <= 7
        else:
            rc = lib.mp_book_apply(book._c, data, len(data))
            assert rc in errors or rc in (0, 1)
        bids, asks = book.bids.top(10**6), book.asks.top(10**6)  # what is stored reads back
        assert (len(bids), len(asks)) == (len(book.bids), len(book.asks))
