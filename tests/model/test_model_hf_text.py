from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_mupd.model import HFTextEncoder, MuPDConfig, MuPDPipeline

transformers = pytest.importorskip("transformers")

WORDS = ["tumor", "normal", "stroma", "with", "cells"]


@pytest.fixture
def bert_folder(tmp_path):
    """A tiny random BERT with a word-piece vocabulary, saved as a local HF folder."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    if int(transformers.__version__.split(".")[0]) >= 5:  # 5.x ignores vocab_file=
        tokenizer = transformers.BertTokenizerFast(vocab=str(vocab))
    else:
        tokenizer = transformers.BertTokenizerFast(vocab_file=str(vocab))
    assert tokenizer.unk_token_id not in tokenizer("tumor", add_special_tokens=False).input_ids
    config = transformers.BertConfig(
        vocab_size=len(WORDS) + 5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32,
    )  # fmt: skip
    folder = tmp_path / "bert"
    transformers.BertModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def test_local_hf_text_encoder_is_used_and_saved_with_the_model(bert_folder, tmp_path) -> None:
    config = dataclasses.replace(MuPDConfig.tiny(), hf_text_encoder=str(bert_folder), text_dim=16)
    pipe = MuPDPipeline.from_config(config, device="cpu")
    assert isinstance(pipe.text_encoder, HFTextEncoder)
    a = pipe(text="tumor with cells", generator=0, num_inference_steps=1)
    b = pipe(text="normal stroma", generator=0, num_inference_steps=1)
    assert not np.array_equal(a.images, b.images)
    out = tmp_path / "ckpt"
    pipe.save_pretrained(out)
    assert (out / "text_encoder" / "model.safetensors").is_file()
    assert MuPDConfig.load(out).hf_text_encoder == "text_encoder"
    loaded = MuPDPipeline.from_pretrained(out, device="cpu")
    again = loaded(text="tumor with cells", generator=0, num_inference_steps=1)
    assert np.array_equal(a.images, again.images)
    assert loaded.model_hash == pipe.model_hash


def test_width_mismatch_is_reported(bert_folder) -> None:
    config = dataclasses.replace(MuPDConfig.tiny(), hf_text_encoder=str(bert_folder), text_dim=32)
    with pytest.raises(ValueError, match="width 16"):
        MuPDPipeline.from_config(config)


def test_hf_unknown_words_are_reported(bert_folder) -> None:
    config = dataclasses.replace(MuPDConfig.tiny(), hf_text_encoder=str(bert_folder), text_dim=16)
    pipe = MuPDPipeline.from_config(config, device="cpu")
    words = pipe.check_words("tumor with Ki67 cells")
    assert words.unknown == ("Ki67",) and words.cut == ()
    assert "unknown token" in words.note()
    assert not pipe.check_words("normal stroma")
