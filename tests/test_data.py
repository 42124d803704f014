"""The operations task: vocabulary ids, encoding, answers, and splits disjoint on distinct inputs."""

from __future__ import annotations

import numpy as np
import pytest

from transformer.data import OPS, PAD, VOCAB, answer, decode, encode, encode_batch, make_splits, parse_arity


def test_vocabulary_ids_match_the_design_document():
    assert len(VOCAB) == 20
    assert VOCAB[:2] == ["<pad>", "<unk>"]
    assert VOCAB[2:12] == list("0123456789")
    assert VOCAB[12:] == ["First", "Second", "Last", "Max", "Min", "(", ",", ")"]
    assert OPS == ["First", "Second", "Last", "Max", "Min"]


def test_encode_with_and_without_spaces():
    ids = [15, 17, 7, 18, 5, 18, 11, 19]
    assert encode("Max(5,3,9)") == ids
    assert encode("Max ( 5 , 3 , 9 )") == ids
    assert encode("  Max(5, 3,9) ") == ids
    assert decode(ids) == "Max(5,3,9)"
    assert decode([PAD, PAD, *ids]) == "Max(5,3,9)"


@pytest.mark.parametrize(
    "text, message",
    [
        ("Max(5,3", "closing"),
        ("Foo(1,2,3)", "unknown operation"),
        ("Max(12,3,4)", "single digit"),
        ("", "empty"),
        ("   ", "empty"),
        ("Max(1,,2)", "commas"),
        ("Max 1,2)", "expected '\\('"),
        ("Max(1;2)", "unexpected character"),
        ("Max(1,2,3,4,5,6,7,8,9,0,1)", "2 to 10"),
    ],
)
def test_malformed_input_raises_a_clear_value_error(text, message):
    with pytest.raises(ValueError, match=message):
        encode(text)


def test_answers():
    assert answer("First", [4, 1, 7]) == 4
    assert answer("Second", [4, 1, 7]) == 1
    assert answer("Last", [4, 1, 7]) == 7
    assert answer("Max", [9, 9, 5]) == 9
    assert answer("Min", [3, 0, 8]) == 0
    with pytest.raises(ValueError):
        answer("Sum", [1, 2])


def test_parse_arity():
    assert parse_arity("3") == [3]
    assert parse_arity("2-5") == [2, 3, 4, 5]
    assert parse_arity("2,4") == [2, 4]
    for bad in ("11", "1", "x", "3-12"):
        with pytest.raises(ValueError):
            parse_arity(bad)


def _inputs(data) -> set[str]:
    return set(data.texts())


def test_default_splits_are_disjoint_and_sized_as_documented():
    splits = make_splits(seed=0)
    train, val, test = (_inputs(d) for d in (splits.train, splits.val, splits.test))
    assert len(splits.train) == 10_000
    assert len(train) == 3000 and len(val) == 1000 and len(test) == 1000  # 60/20/20 of 5,000
    assert not train & val and not train & test and not val & test
    counts = np.bincount(splits.train.ops, minlength=5)
    assert counts.min() > 1800  # every operation is well represented


def test_targets_are_the_answers_and_padding_is_on_the_left():
    data = make_splits(arity="2-4", train_size=300, eval_size=60, seed=1).train
    assert (data.ids[:, -1] == VOCAB.index(")")).all()
    assert (data.mask == (data.ids != PAD)).all()
    for text, target in zip(data.texts(range(50)), data.targets[:50], strict=True):
        op, args = text.split("(")[0], [int(c) for c in text if c.isdigit()]
        assert VOCAB[target] == str(answer(op, args))
    assert {int(m.sum()) for m in data.mask} == {6, 8, 10}


def test_splits_are_seeded():
    a, b, c = (
        make_splits(seed=3, train_size=100),
        make_splits(seed=3, train_size=100),
        make_splits(seed=4, train_size=100),
    )
    assert (a.train.ids == b.train.ids).all() and (a.test.ids == b.test.ids).all()
    assert _inputs(a.test) != _inputs(c.test)


def test_test_arity_for_length_generalisation():
    splits = make_splits(arity=3, test_arity="2,4", train_size=100, eval_size=200)
    assert {int(m.sum()) for m in splits.train.mask} == {8}
    assert {int(m.sum()) for m in splits.test.mask} == {6, 10}


def test_encode_batch_pads_mixed_lengths():
    data = encode_batch(["Max(5,3,9)", "Min(1,2)"])
    assert data.ids.shape == (2, 8)
    assert decode(data.ids[1]) == "Min(1,2)"
    assert [VOCAB[t] for t in data.targets] == ["9", "1"]
