"""The fixed tests: their pass rate is the metric (higher is better)."""

from textstats import average_word_length, capitalize_sentences, most_common_word, word_count


def test_word_count_simple():
    assert word_count("a b c") == 3


def test_word_count_extra_spaces():
    assert word_count("  a   b\tc\n") == 3


def test_word_count_empty():
    assert word_count("") == 0


def test_average_word_length():
    assert average_word_length("ab abcd") == 3.0


def test_average_word_length_empty():
    assert average_word_length("") == 0.0


def test_most_common_word_case_insensitive():
    assert most_common_word("The cat saw the dog") == "the"


def test_capitalize_sentences():
    assert capitalize_sentences("hello there. general Kenobi") == "Hello there. General Kenobi"


def test_capitalize_keeps_inner_case():
    assert capitalize_sentences("i met NASA. it was fun") == "I met NASA. It was fun"
