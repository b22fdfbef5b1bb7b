"""text.first_few: the one way a message lists some of many names."""

from ctslice.text import first_few


def test_first_few_lists_all_up_to_the_limit_then_says_how_many_more():
    assert first_few([]) == ""
    assert first_few(["a", "b"], 2) == "a, b"
    assert first_few([f"s{i}" for i in range(8)]) == "s0, s1, s2, s3, s4 and 3 more"
    assert first_few(range(4), 3, separator=" ") == "0 1 2 and 1 more"
