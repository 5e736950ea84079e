"""IncrementalDetokenizer: byte pieces in, safe text deltas out."""

from serving.detokenizer import IncrementalDetokenizer


def feed(detok: IncrementalDetokenizer, pieces: list[bytes]) -> list[str]:
    return [detok.push(p) for p in pieces]


def test_a_character_split_across_pieces_is_released_whole():
    data = "què 🙂".encode()
    deltas = feed(IncrementalDetokenizer(), [data[i : i + 1] for i in range(len(data))])
    assert "".join(deltas) == "què 🙂"
    assert "\ufffd" not in "".join(deltas)
    assert deltas[-4:] == ["", "", "", "🙂"]


def test_a_stop_string_split_across_pieces_is_never_released():
    detok = IncrementalDetokenizer(stop=("<|end|>",))
    deltas = feed(detok, [b"Hello <|", b"en", b"d|> ignored"])
    assert "".join(deltas) == "Hello "
    assert detok.stopped and detok.flush() == ""


def test_held_text_is_released_once_it_cannot_be_a_stop_string():
    detok = IncrementalDetokenizer(stop=("STOP",))
    assert detok.push(b"a ST") == "a "
    assert detok.push(b"AR") == "STAR"
    assert detok.push(b" S") == " "
    assert detok.flush() == "S"  # generation ended: the held text was real output


def test_the_earliest_of_several_stop_strings_wins():
    detok = IncrementalDetokenizer(stop=("world", "lo w"))
    assert detok.push(b"hello world") == "hel"
