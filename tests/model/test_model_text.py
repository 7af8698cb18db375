from __future__ import annotations

import pytest
import torch

from napari_mupd.errors import ConditionError
from napari_mupd.model import TextEncoder, TextTokenizer
from napari_mupd.model.encoders.text import CHARS, PAD, UNK

TOK = TextTokenizer(["tumor", "stroma"], max_length=12)


def test_known_words_are_single_tokens_case_insensitive() -> None:
    assert TOK.ids("Tumor STROMA") == TOK.ids("tumor stroma")
    assert len(TOK.ids("tumor stroma")) == 2


def test_unknown_words_are_spelled_in_characters() -> None:
    ids = TOK.ids("Ki-67 µ")
    assert ids[:2] == [2 + CHARS.index("k"), 2 + CHARS.index("i")]
    assert len(ids) == 6  # k i - 6 7 µ
    assert ids[-1] == UNK  # µ is outside the ASCII character set


def test_batch_is_padded_and_truncated() -> None:
    ids, mask = TOK(["tumor", "a very long prompt indeed"])
    assert ids.shape == (2, 12)
    assert mask[0].sum() == 1 and mask[1].all()
    assert (ids[0, 1:] == PAD).all()


@pytest.mark.parametrize("bad", ["", "   \n", ["tumor", ""], [], ["tumor", None]])
def test_empty_prompts_are_condition_errors(bad: object) -> None:
    with pytest.raises(ConditionError, match=r"text: "):
        TOK(bad)  # type: ignore[arg-type]


def test_build_vocab_ranks_frequent_words() -> None:
    vocab = TextTokenizer.build_vocab(["tumor cells", "tumor stroma", "Tumor, cells."], 2)
    assert vocab == ["tumor", "cells"]


def test_encoder_gives_one_feature_per_token() -> None:
    enc = TextEncoder(["tumor"], 8, dim=16, layers=1, heads=2).eval()
    ids, mask = enc.tokenize(["tumor", "normal"])
    with torch.no_grad():
        out = enc(ids, mask)
    assert out.shape == (2, ids.shape[1], 16)
    assert torch.isfinite(out).all()


def test_check_words_names_unknown_and_cut_words_as_typed() -> None:
    words = TOK.check_words("Tumor with Ki67, stroma tumor hotspot")
    # tumor 1 + with 4 + ki67 4 + "," 1 + stroma 1 + tumor 1 = 12 tokens; hotspot is past 12
    assert words.unknown == ("with", "Ki67") and words.cut == ("hotspot",)
    assert words.max_tokens == 12 and bool(words)
    note = words.note()
    assert "\n" not in note and "Ki67" in note and "hotspot" in note
    assert "spelled out" in note and "12-token limit, ignored" in note
    assert len(TOK.ids("Tumor with Ki67, stroma tumor hotspot")) == 12  # what ids really does


def test_check_words_is_quiet_for_known_words_and_single_characters() -> None:
    words = TOK.check_words("tumor, stroma; x")  # punctuation and letters are characters
    assert not words and words.note() == ""
    assert TOK.check_words("Tumor tumor").unknown == ()
    assert TOK.check_words("ki67 KI67").unknown == ("ki67",)  # each word once
