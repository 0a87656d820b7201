"""Char, word and subword tokenizers with one interface; structure tags, control tokens and <eos> are single tokens.

Every tokenizer is lossless: decode(encode(text)) == text for any text, seen or not. Char and
word fall back to UTF-8 byte tokens for characters they never saw, and word spells rare words
in characters, so no <unk> is ever produced and bits/char is a true code length.

Char and word tokenizers are written here because each is a vocabulary plus a regex: keras_hub's
UnicodeCodepointTokenizer and WordPieceTokenizer cannot keep `[chorus]` as one token, and a
numpy lookup table encodes millions of characters per second. Subword uses Hugging Face
`tokenizers` (byte-level BPE, trained in Rust on the train split).

Control tokens (`<tag:rap>`, see lyricslab.data.conditioning) found in the training texts join the
vocabulary as whole tokens; one the vocabulary lacks is spelled like any text, so round trips hold.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from lyricslab.data.conditioning import CONTROL_PATTERN
from lyricslab.data.normalize import STRUCTURE_TAGS, TAG_PATTERN

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
SPECIALS = [PAD, UNK, EOS, *STRUCTURE_TAGS]
PAD_ID, UNK_ID, EOS_ID = 0, 1, 2
CONFIG_FILE = "tokenizer_config.json"
# Part of the token-cache key (lyricslab.training.train.tokenize_splits): bump it whenever a change here
# changes the tokens a config produces, or runs keep reusing token streams from the old code.
TOKENIZER_CACHE_VERSION = 3


class Tokenizer:
    kind = "base"
    pad_id, unk_id, eos_id = PAD_ID, UNK_ID, EOS_ID

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def _save(self, folder: Path) -> dict[str, Any]:
        raise NotImplementedError

    def control_tokens(self) -> list[str]:
        """The control tokens (`<tag:rap>`, ...) this vocabulary has as single tokens."""
        return []

    def control_ids(self) -> list[int]:
        """Their ids: inputs the model is given, never targets it is scored on."""
        return []

    def line_end_ids(self) -> list[int]:
        """Ids whose text ends a line (<eos> too: it reads as one). Under conditioning.repeat=line a
        control prefix follows each of them, and generation writes it there."""
        return [i for i in range(self.vocab_size) if self.decode([i]).endswith("\n")]

    def encode_songs(self, songs: Sequence[str]) -> np.ndarray:
        """One token stream: each song followed by <eos>."""
        parts = []
        eos = np.array([self.eos_id], dtype=np.int32)
        for song in songs:
            parts += [self.encode(song), eos]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int32)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"kind": self.kind, **self._save(folder)}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        return folder


# Byte fallback: a character outside the vocabulary is spelled as its UTF-8 bytes, so every
# text encodes and decodes losslessly and bits/char is a true code length (no <unk> shortcut).
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]
BYTES_START = len(SPECIALS)
# A structure tag or a control token: the pieces a vocabulary may hold whole.
WHOLE_PATTERN = re.compile(f"{TAG_PATTERN.pattern}|{CONTROL_PATTERN.pattern}")


def controls_in(texts: Iterable[str]) -> tuple[list[str], list[str]]:
    """(the control tokens in `texts`, sorted; the texts without them) for training a vocabulary."""
    found: set[str] = set()
    plain = []
    for text in texts:
        found.update(m.group(0) for m in CONTROL_PATTERN.finditer(text))
        plain.append(CONTROL_PATTERN.sub("", text))
    return sorted(found), plain


class _VocabTokenizer(Tokenizer):
    """Shared by char and word: an explicit token list (specials, 256 bytes, learned pieces).

    A text is the concatenation of its tokens' strings, so decoding is a join; byte tokens are
    gathered and decoded as UTF-8.
    """

    def __init__(self, tokens: list[str]):
        if tokens[: len(SPECIALS)] != SPECIALS or tokens[BYTES_START:BYTES_START + 256] != BYTE_TOKENS:
            raise ValueError("vocabulary must start with the special tokens and the 256 byte tokens; "
                             "retrain the tokenizer (it was saved by an older lyricslab)")
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens) if i >= BYTES_START + 256 or i < len(SPECIALS)}

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def _save(self, folder: Path) -> dict[str, Any]:
        (folder / "vocab.json").write_text(json.dumps(self.tokens, ensure_ascii=False))
        return {}

    def control_tokens(self) -> list[str]:
        return [t for t in self.tokens[BYTES_START + 256:] if CONTROL_PATTERN.fullmatch(t)]

    def control_ids(self) -> list[int]:
        return [self.index[t] for t in self.control_tokens()]

    def _pieces(self, text: str) -> list[tuple[bool, str]]:
        """Split text into (is_whole, piece) around structure tags and known control tokens."""
        out, pos = [], 0
        for m in WHOLE_PATTERN.finditer(text):
            if m.group(0) not in self.index:  # a control token this vocabulary lacks: spelled as text
                continue
            if m.start() > pos:
                out.append((False, text[pos:m.start()]))
            out.append((True, m.group(0)))
            pos = m.end()
        if pos < len(text):
            out.append((False, text[pos:]))
        return out

    def _spell(self, text: str) -> list[int]:
        """Character tokens where the vocabulary has them, UTF-8 byte tokens where it doesn't."""
        ids: list[int] = []
        for ch in text:
            i = self.index.get(ch)
            ids += [i] if i is not None else [BYTES_START + b for b in ch.encode("utf-8")]
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        out: list[str] = []
        pending = bytearray()
        for i in map(int, ids):
            if BYTES_START <= i < BYTES_START + 256:
                pending.append(i - BYTES_START)
                continue
            if pending:
                out.append(pending.decode("utf-8", errors="replace"))
                pending.clear()
            if i in (PAD_ID, UNK_ID):
                continue
            out.append("\n" if i == EOS_ID else self.tokens[i])
        if pending:
            out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out)


class CharTokenizer(_VocabTokenizer):
    kind = "char"

    def __init__(self, tokens: list[str]):
        super().__init__(tokens)
        # Codepoint -> id lookup table: encoding is one numpy gather per text piece; -1 marks a
        # character the vocabulary lacks (spelled in bytes).
        self.table = np.full(0x110000, -1, dtype=np.int32)
        for i, t in enumerate(tokens[BYTES_START + 256:], start=BYTES_START + 256):
            if len(t) == 1:
                self.table[ord(t)] = i

    @classmethod
    def train(cls, texts: Iterable[str], cfg: Any = None) -> "CharTokenizer":
        controls, texts = controls_in(texts)
        chars: set[str] = set()
        for text in texts:
            chars.update(TAG_PATTERN.sub("", text))
        return cls(SPECIALS + BYTE_TOKENS + controls + sorted(chars))

    def encode(self, text: str) -> np.ndarray:
        parts = []
        for is_tag, piece in self._pieces(text):
            if is_tag:
                parts.append(np.array([self.index[piece]], dtype=np.int32))
                continue
            ids = self.table[np.frombuffer(piece.encode("utf-32-le"), dtype=np.uint32)]
            if (ids < 0).any():  # rare: unseen characters, spelled one by one
                ids = np.asarray(self._spell(piece), dtype=np.int32)
            parts.append(ids)
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int32)


# Words keep the space before them (" harbour"), like GPT-2's pieces, so whitespace survives.
WORD_RE = re.compile(r" ?\w+(?:['’-]\w+)*| ?[^\w\s]|\n| +|\s")


class WordTokenizer(_VocabTokenizer):
    """Words with their leading space, punctuation and whitespace; rare words spelled in characters."""

    kind = "word"

    @classmethod
    def train(cls, texts: Iterable[str], cfg: Any = None) -> "WordTokenizer":
        vocab_size = int(getattr(cfg, "vocab_size", None) or 8000)
        min_freq = int(getattr(cfg, "min_freq", None) or 1)
        controls, texts = controls_in(texts)
        counts: Counter = Counter()
        chars: set[str] = set()
        for text in texts:
            plain = TAG_PATTERN.sub("", text)
            chars.update(plain)
            counts.update(WORD_RE.findall(plain))
        # Every training character is a token (to spell rare words); words fill the rest.
        singles = sorted(chars)
        room = max(vocab_size - len(SPECIALS) - 256 - len(controls) - len(singles), 0)
        words = [w for w, n in counts.most_common() if n >= min_freq and len(w) > 1][:room]
        return cls(SPECIALS + BYTE_TOKENS + controls + singles + words)

    def encode(self, text: str) -> np.ndarray:
        ids: list[int] = []
        for is_tag, piece in self._pieces(text):
            if is_tag:
                ids.append(self.index[piece])
                continue
            for word in WORD_RE.findall(piece):
                i = self.index.get(word)
                ids += [i] if i is not None else self._spell(word)
        return np.asarray(ids, dtype=np.int32)


class SubwordTokenizer(Tokenizer):
    kind = "subword"

    def __init__(self, hf_tokenizer: Any):
        self.hf = hf_tokenizer

    @classmethod
    def train(cls, texts: Iterable[str], cfg: Any = None) -> "SubwordTokenizer":
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        controls, texts = controls_in(texts)  # whole tokens, kept out of the merges
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=int(getattr(cfg, "vocab_size", None) or 2000),
            min_frequency=int(getattr(cfg, "min_freq", None) or 2),
            special_tokens=SPECIALS + controls,  # ids 0.. in this order, matched whole in any text
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator(texts, trainer=trainer)
        return cls(hf)

    def control_tokens(self) -> list[str]:
        return sorted(t for t in self.hf.get_vocab() if CONTROL_PATTERN.fullmatch(t))

    def control_ids(self) -> list[int]:
        return [self.hf.token_to_id(t) for t in self.control_tokens()]

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.hf.encode(text).ids, dtype=np.int32)

    def encode_songs(self, songs: Sequence[str]) -> np.ndarray:
        eos = [EOS_ID]
        ids: list[int] = []
        for enc in self.hf.encode_batch(list(songs)):  # parallel in Rust
            ids += enc.ids + eos
        return np.asarray(ids, dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids if int(i) != PAD_ID]
        text = self.hf.decode(ids, skip_special_tokens=False)
        return text.replace(EOS, "\n")

    def _save(self, folder: Path) -> dict[str, Any]:
        self.hf.save(str(folder / "tokenizer.json"))
        return {}


KINDS = {"char": CharTokenizer, "word": WordTokenizer, "subword": SubwordTokenizer}
# Tokenizers that come with a model preset (lyricslab.text.preset_tokenizers): loaded from it, never trained.
PRESET_KINDS = ("gpt2", "bert")
