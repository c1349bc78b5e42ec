"""Documents: cut into sentences, each a sequence of the same batch, rejoined exactly as written."""

from __future__ import annotations

import pytest

from service.documents import Document, rejoin, split
from service.engine import Engine
from service.errors import InputTooLong, InvalidOptions
from service.results import Generation


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("  Hello there.  How are you?I am fine.\tOk   ", ["Hello there.", "How are you?", "I am fine.", "Ok"]),
        ("one.\n\ntwo three. four\r\n  five  \n", ["one.", "two three.", "four", "five"]),
        ("Dr. Smith went home. He slept.", ["Dr. Smith went home.", "He slept."]),
        ("no end mark", ["no end mark"]),
        ("Guten Tag. Wie geht's?", ["Guten Tag.", "Wie geht's?"]),
    ],
)
def test_sentences_and_everything_between_them_are_kept(text, sentences):
    document = split(text)
    assert document.sentences == sentences
    assert document.join(document.sentences) == text
    assert document.join([s.upper() for s in sentences]) == text.upper()  # translations land in place


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("one hundred\nand twenty-three. Seven.", ["one hundred\nand twenty-three.", "Seven."]),
        ("  a line\r\nthat goes on.\n\nNext one.\n", ["a line\r\nthat goes on.", "Next one."]),
    ],
)
def test_without_line_breaks_a_sentence_runs_over_lines(text, sentences):
    """DeepL's `nonewlines`: only the sentences' own ends split them; what lies between is kept."""
    document = split(text, line_breaks=False)
    assert document.sentences == sentences
    assert document.join(document.sentences) == text
    assert split(text).sentences != sentences  # by default each line ends its sentence


def test_rejoin_makes_one_generation_per_text():
    documents = [Document(["a.", "b."], ["", "\n", "!"]), Document(["c"], [" ", ""])]
    parts = [
        Generation("A.", [5, 6], 3, 2, "eos"),
        Generation("B.", [7], 2, 1, "length"),
        Generation("C", [8], 1, 1, "eos"),
    ]
    first, second = rejoin(documents, parts)
    assert (first.text, first.token_ids, first.input_tokens, first.output_tokens) == ("A.\nB.!", [5, 6, 7], 5, 3)
    assert first.finish_reason == "length" and second.finish_reason == "eos" and second.text == " C"


@pytest.fixture(scope="module")
def engine(tiny_dir):
    return Engine(tiny_dir)


def test_a_document_translates_as_its_sentences_alone(engine):
    sentences = ["the quick brown fox.", "hello world!", "one two three?"]
    text = f"{sentences[0]} {sentences[1]}\n\n  {sentences[2]}\n"
    options = {"max_new_tokens": 6}
    [whole] = engine.generate([text], options, split_sentences=True)
    alone = engine.generate(sentences, options)
    assert whole.text == f"{alone[0].text} {alone[1].text}\n\n  {alone[2].text}\n"
    assert whole.token_ids == [t for g in alone for t in g.token_ids]
    [unsplit] = engine.generate([text], options)  # off: one sequence, as before
    assert unsplit.input_tokens == len(engine.prepare([text])[0].input_ids)


def test_a_document_over_the_input_limit_is_translated_by_sentence(engine):
    limit = engine.manifest.limits.max_input_tokens
    text = " ".join(["the quick brown fox jumps."] * limit)
    with pytest.raises(InputTooLong):
        engine.generate([text], {"max_new_tokens": 2})
    [result] = engine.generate([text], {"max_new_tokens": 2}, split_sentences=True)
    assert result.input_tokens > limit and result.text.count(" ") >= limit - 1
    with pytest.raises(InputTooLong, match="a sentence of input text 0"):
        engine.generate(["word " * limit], {"max_new_tokens": 2}, split_sentences=True)


def test_splitting_refuses_what_is_one_sequence(engine):
    with pytest.raises(InvalidOptions, match="split_sentences"):
        engine.generate(["a. b."], return_alignment=True, split_sentences=True)
