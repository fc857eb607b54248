"""OKX CRC32 book checksum against OKX's documented examples and an independent model."""

from hypothesis import given
from hypothesis import strategies as st

from supervisor.exchanges.okx_checksum import checksum_string, okx_checksum
from tests.test_okx_messages import OkxBookStream, reference_checksum

# OKX v3 "depth" channel docs (the algorithm v5 kept): the pushed data with its checksum.
DOC_ALIGNED = {  # "Example 1: The bid data aligns with the ask data"
    "asks": [["3366.8", "9", 10], ["3368", "8", 3]],
    "bids": [["3366.1", "7", 0], ["3366", "6", 3]],
    "timestamp": "2018-12-04T09:38:36.300Z",
    "checksum": -1881014294,
}
DOC_UNALIGNED = {  # "Example 2: The bid data does not align with the ask data"
    "asks": [["3366.8", "9", 10], ["3368", "8", 3], ["3372", "8", 3]],
    "bids": [["3366.1", "7", 0]],
    "timestamp": "2018-12-04T09:38:36.300Z",
    "checksum": 831078360,
}
# OKX v5 "Order book channel" -> "Calculate Checksum": four-field levels, check strings.
V5_MORE_THAN_25 = {"bids": [["3366.1", "7", "0", "3"], ["3366", "6", "3", "4"]],
                   "asks": [["3366.8", "9", "10", "3"], ["3368", "8", "3", "4"]]}
V5_LESS_THAN_25 = {"bids": [["3366.1", "7", "0", "3"]],
                   "asks": [["3366.8", "9", "10", "3"], ["3368", "8", "3", "4"],
                            ["3372", "8", "3", "4"]]}


def test_matches_documented_checksum_when_sides_align():
    assert okx_checksum(DOC_ALIGNED["bids"], DOC_ALIGNED["asks"]) == DOC_ALIGNED["checksum"]


def test_matches_documented_checksum_when_one_side_is_short():
    assert okx_checksum(DOC_UNALIGNED["bids"], DOC_UNALIGNED["asks"]) == DOC_UNALIGNED["checksum"]


def test_builds_the_documented_v5_check_strings():
    assert checksum_string(**V5_MORE_THAN_25) == "3366.1:7:3366.8:9:3366:6:3368:8"
    assert checksum_string(**V5_LESS_THAN_25) == "3366.1:7:3366.8:9:3368:8:3372:8"


def test_returns_a_negative_int32_when_the_crc_high_bit_is_set():
    value = okx_checksum(DOC_ALIGNED["bids"], DOC_ALIGNED["asks"])
    assert -2**31 <= value < 0


def test_uses_the_original_strings_not_their_numeric_value():
    # OKX: "If price is '0.5000', DO NOT calculate the checksum by '0.5'".
    assert checksum_string([["0.5000", "1.10"]], [["0.6", "2"]]) == "0.5000:1.10:0.6:2"
    assert okx_checksum([["0.5000", "1"]], [["0.6", "2"]]) != okx_checksum([["0.5", "1"]],
                                                                          [["0.6", "2"]])


def test_reads_only_the_top_25_levels_of_each_side():
    bids = [[str(1000 - i), "1"] for i in range(30)]
    asks = [[str(1001 + i), "1"] for i in range(40)]
    assert okx_checksum(bids, asks) == okx_checksum(bids[:25], asks[:25])
    assert checksum_string(bids, asks).count(":") == 25 * 4 - 1


def test_an_empty_side_leaves_the_other_side_alone():
    assert checksum_string([], [["1", "2"], ["3", "4"]]) == "1:2:3:4"
    assert checksum_string([], []) == ""


@given(seed=st.integers(0, 2**32 - 1), updates=st.integers(0, 30))
def test_agrees_with_the_independent_model_on_random_books(seed, updates):
    stream = OkxBookStream(seed=seed)
    for _ in range(updates):
        stream.update()
    bids, asks = stream.levels()
    assert okx_checksum(bids, asks) == reference_checksum(bids, asks)
