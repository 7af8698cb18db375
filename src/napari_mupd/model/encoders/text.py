"""Text stream: a deterministic tokenizer and a small transformer, or a local HF encoder."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from napari_mupd.errors import ConditionError, MissingDependencyError

PAD, UNK = 0, 1
CHARS = string.ascii_lowercase + string.digits + string.punctuation
_PIECES = re.compile(r"[^\W_]+|\S")


def check_prompts(text: str | Sequence[str]) -> list[str]:
    """A prompt or a list of prompts as a list; ConditionError if any is empty."""
    if not isinstance(text, (str, Sequence)):
        raise ConditionError(
            f"text: expected a prompt or a list of prompts, got {type(text).__name__}"
        )
    prompts = [text] if isinstance(text, str) else list(text)
    if not prompts:
        raise ConditionError("text: the list of prompts is empty")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ConditionError(f"text: prompt {i} is {type(p).__name__}, not str")
        if not p.strip():
            raise ConditionError(f"text: prompt {i} is empty or whitespace; give words or None")
    return prompts


def _words(items: Sequence[str]) -> str:
    return ", ".join(items)


@dataclass(frozen=True)
class PromptWords:
    """What a text encoder makes of a prompt's words (see ``check_words``).

    ``unknown``: words it has no token for (the built-in tokenizer spells them out letter
    by letter, which a model trained on a small vocabulary reads poorly; a Hugging Face
    tokenizer maps them to its unknown token). ``cut``: words past the ``max_tokens``
    limit, which the encoder never reads. Words are as typed, in prompt order, each once.
    """

    unknown: tuple[str, ...] = ()
    cut: tuple[str, ...] = ()
    max_tokens: int = 0
    #: How ``unknown`` words are encoded, for the note.
    fallback: str = "spelled out letter by letter (expect little effect)"

    def __bool__(self) -> bool:
        return bool(self.unknown or self.cut)

    def note(self) -> str:
        """One line for the user naming the words and what happened to them; "" if none."""
        parts = []
        if self.unknown:
            parts.append(
                f"words the text encoder does not know, {self.fallback}: {_words(self.unknown)}"
            )
        if self.cut:
            parts.append(f"past its {self.max_tokens}-token limit, ignored: {_words(self.cut)}")
        return "; ".join(parts)


def unique_words(words: Iterable[str]) -> tuple[str, ...]:
    """Each word once (case-insensitively), as first typed."""
    first: dict[str, str] = {}
    for word in words:
        first.setdefault(word.lower(), word)
    return tuple(first.values())


class TextTokenizer:
    """Lower-case word tokenizer with a character fallback; fully determined by its vocab.

    Ids: 0 pad, 1 unknown character, then one id per character of `CHARS`, then one per
    vocabulary word. A word not in the vocabulary is spelled out in characters.
    """

    def __init__(self, vocab: Sequence[str], max_length: int) -> None:
        self.vocab = list(vocab)
        self.max_length = max_length
        self._chars = {c: 2 + i for i, c in enumerate(CHARS)}
        offset = 2 + len(CHARS)
        self._words = {w.lower(): offset + i for i, w in enumerate(self.vocab)}

    @property
    def vocab_size(self) -> int:
        return 2 + len(CHARS) + len(self.vocab)

    def ids(self, prompt: str) -> list[int]:
        """Token ids of one prompt, truncated to `max_length`."""
        out: list[int] = []
        for piece in _PIECES.findall(prompt.lower()):
            if piece in self._words:
                out.append(self._words[piece])
            else:
                out.extend(self._chars.get(ch, UNK) for ch in piece)
        return out[: self.max_length]

    def check_words(self, prompt: str) -> PromptWords:
        """The words of ``prompt`` not in the vocabulary (spelled out, see `ids`) and those
        past ``max_length`` tokens (dropped): what `ids` does with them, for the user."""
        lowered = prompt.lower()
        same = len(lowered) == len(prompt)  # then spans of the lowered text fit the prompt
        unknown, cut, used = [], [], 0
        for match in _PIECES.finditer(lowered):
            piece = match.group()
            known = piece in self._words
            used += 1 if known else len(piece)
            if not piece.isalnum():
                continue
            word = prompt[match.start() : match.end()] if same else piece
            if used > self.max_length:
                cut.append(word)
            elif not known and len(piece) > 1:
                unknown.append(word)
        return PromptWords(unique_words(unknown), unique_words(cut), self.max_length)

    def __call__(self, text: str | Sequence[str]) -> tuple[Tensor, Tensor]:
        """Padded ids (B, L) and a mask (B, L), True for real tokens."""
        rows = [self.ids(p) for p in check_prompts(text)]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return ids, ids != PAD

    @staticmethod
    def build_vocab(texts: Iterable[str], max_words: int, min_count: int = 2) -> list[str]:
        """The `max_words` most frequent words (of length > 1) seen at least `min_count` times."""
        counts = Counter(w for t in texts for w in _PIECES.findall(t.lower()) if len(w) > 1)
        ranked = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: -counts[w])
        return ranked[:max_words]


class TextEncoder(nn.Module):
    """Token + position embeddings and a pre-norm transformer encoder, trained with the model."""

    def __init__(
        self, vocab: Sequence[str], max_length: int, dim: int, layers: int, heads: int
    ) -> None:
        super().__init__()
        self.tokenizer = TextTokenizer(vocab, max_length)
        self.embed = nn.Embedding(self.tokenizer.vocab_size, dim, padding_idx=PAD)
        self.pos = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def tokenize(self, text: str | Sequence[str]) -> tuple[Tensor, Tensor]:
        """Ids and mask for `forward`; ConditionError on empty prompts."""
        return self.tokenizer(text)

    def check_words(self, prompt: str) -> PromptWords:
        """Unknown and cut words of ``prompt`` (see `TextTokenizer.check_words`)."""
        return self.tokenizer.check_words(prompt)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Token features (B, L, dim); padded positions are to be ignored (see `mask`)."""
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        return self.norm(self.encoder(x, src_key_padding_mask=~mask))


class HFTextEncoder(nn.Module):
    """A local Hugging Face text encoder folder (tokenizer + model), frozen, offline."""

    def __init__(self, path: str | Path, max_length: int) -> None:
        super().__init__()
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as e:  # pragma: no cover - transformers is installed in CI
            raise MissingDependencyError("transformers", "hf", "A Hugging Face text encoder") from e
        self.path = Path(path)
        self.max_length = max_length
        self.hf_tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True)
        self.model.requires_grad_(False).eval()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def tokenize(self, text: str | Sequence[str]) -> tuple[Tensor, Tensor]:
        """Ids and mask for `forward`; ConditionError on empty prompts."""
        enc = self.hf_tokenizer(
            check_prompts(text),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return enc["input_ids"], enc["attention_mask"].bool()

    def check_words(self, prompt: str) -> PromptWords:
        """Whitespace-separated words of ``prompt`` that the tokenizer maps to its unknown
        token, and those past ``max_length`` tokens (special tokens included)."""
        tok = self.hf_tokenizer
        used = tok.num_special_tokens_to_add()
        unknown, cut = [], []
        for word in prompt.split():
            ids = tok(word, add_special_tokens=False)["input_ids"]
            used += len(ids)
            if used > self.max_length:
                cut.append(word)
            elif tok.unk_token_id is not None and tok.unk_token_id in ids:
                unknown.append(word)
        return PromptWords(
            unique_words(unknown), unique_words(cut), self.max_length, "read as the unknown token"
        )

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Last hidden state (B, L, hidden_size)."""
        return self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state

    def save(self, directory: str | Path) -> None:
        """Write tokenizer and weights (safetensors) into `directory`."""
        self.model.save_pretrained(directory, safe_serialization=True)
        self.hf_tokenizer.save_pretrained(directory)
