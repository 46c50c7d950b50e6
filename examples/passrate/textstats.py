"""A small module with bugs. The agent may edit this file only; the tests are fixed."""


def word_count(text: str) -> int:
    """Number of whitespace-separated words."""
    return len(text.split(" "))


def average_word_length(text: str) -> float:
    """Mean length of the words; 0.0 for text with no words."""
    words = text.split()
    return sum(len(w) for w in words) / len(words)


def most_common_word(text: str) -> str:
    """The most frequent word, case-insensitive; ties go to the word seen first."""
    counts: dict[str, int] = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return max(counts, key=counts.get)


def capitalize_sentences(text: str) -> str:
    """Upper-case the first letter of each sentence (sentences end with '. ')."""
    return ". ".join(s.capitalize() for s in text.split(". "))
