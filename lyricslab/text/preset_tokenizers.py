"""Tokenizers that come with a keras_hub preset, behind lyricslab's Tokenizer interface.

GPT-2's byte-level BPE (keras_hub GPT2Tokenizer, which runs Hugging Face `tokenizers` in eager
code) is lossless on any text, so bits/char stays the same exact code length as for the
tokenizers lyricslab trains. Structure tags are ordinary text to it (`[chorus]` is a few BPE
pieces), so they stay readable.

lyricslab's ids 0, 1 and 2 are <pad>, <unk> and <eos> for every tokenizer (windows pad with 0 and
weigh out id 0; generation starts and stops at 2), but GPT-2 uses 0 and 2 for real text ("!", "#").
So lyricslab id = GPT-2 id + 3, and GPT-2's `<|endoftext|>` is lyricslab's <eos> (2). The model
adapter (lyricslab.models.gpt2) maps ids back before the backbone and logits forward after it, so
the backbone and its embedding rows stay exactly the preset's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from lyricslab.hub.presets import load_hub_tokenizer
from lyricslab.text.tokenizers import EOS_ID, PAD_ID, UNK_ID, Tokenizer

ID_OFFSET = 3  # lyricslab's <pad>, <unk>, <eos> come before the preset's ids
WORDPIECE_TAG = re.compile(r"\[ (\w+) \]")


class GPT2BPETokenizer(Tokenizer):
    kind = "gpt2"

    def __init__(self, bpe: Any):
        self.bpe = bpe  # keras_hub.tokenizers.GPT2Tokenizer
        self.end_token_id = int(bpe.end_token_id)

    @classmethod
    def from_preset(cls, preset: Any) -> "GPT2BPETokenizer":
        return cls(load_hub_tokenizer(preset, "gpt2"))

    @classmethod
    def load(cls, folder: Path) -> "GPT2BPETokenizer":
        import keras_hub

        return cls(keras_hub.tokenizers.GPT2Tokenizer(vocabulary=str(folder / "vocabulary.json"),
                                                      merges=str(folder / "merges.txt")))

    @property
    def vocab_size(self) -> int:
        return int(self.bpe.vocabulary_size()) + ID_OFFSET

    def to_lyricslab(self, ids: Sequence[int]) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int32)
        return np.where(ids == self.end_token_id, EOS_ID, ids + ID_OFFSET).astype(np.int32)

    def encode(self, text: str) -> np.ndarray:
        return self.to_lyricslab(self.bpe.tokenize(text))

    def encode_songs(self, songs: Sequence[str]) -> np.ndarray:
        if not songs:
            return np.empty(0, dtype=np.int32)
        eos = [self.end_token_id]
        ids: list[int] = []
        for song in self.bpe.tokenize(list(songs)):  # one batched call (Rust)
            ids += list(song) + eos
        return self.to_lyricslab(ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids; <eos> reads as a newline (as between songs), <pad> and <unk> as nothing."""
        parts: list[str] = []
        piece: list[int] = []
        for i in map(int, ids):
            if i in (PAD_ID, UNK_ID):
                continue
            if i == EOS_ID:
                parts += [self.bpe.detokenize(piece) if piece else "", "\n"]
                piece = []
            else:
                piece.append(i - ID_OFFSET)
        if piece:
            parts.append(self.bpe.detokenize(piece))
        return "".join(str(p) for p in parts)

    def line_end_ids(self) -> list[int]:
        # From the byte-level vocabulary ("Ċ" is its newline byte): decoding 50k ids one by one is slow.
        vocab = self.bpe.get_vocabulary()
        return [EOS_ID] + [i + ID_OFFSET for i, token in enumerate(vocab) if token.endswith("Ċ")]

    def _save(self, folder: Path) -> dict[str, Any]:
        self.bpe.save_assets(str(folder))  # vocabulary.json and merges.txt: the bundle needs no preset
        return {"id_offset": ID_OFFSET}


class BertWordPieceTokenizer(Tokenizer):
    """A BERT preset's WordPiece (keras_hub BertTokenizer), for the masked LM (lyricslab.training.masked_lm).

    Not lossless (WordPiece drops whitespace and newlines), which is fine for a masked LM: it
    reports masked-token accuracy, never bits/char. Its ids are the preset's own: [PAD] is 0,
    and songs are separated by [SEP] (its `eos_id`).
    """

    kind = "bert"

    def __init__(self, wordpiece: Any):
        self.wordpiece = wordpiece  # keras_hub.tokenizers.BertTokenizer
        self.pad_id, self.eos_id = int(wordpiece.pad_token_id), int(wordpiece.sep_token_id)
        self.cls_id, self.mask_id = int(wordpiece.cls_token_id), int(wordpiece.mask_token_id)
        self.unk_id = int(wordpiece.token_to_id("[UNK]"))

    @classmethod
    def from_preset(cls, preset: Any) -> "BertWordPieceTokenizer":
        return cls(load_hub_tokenizer(preset, "bert"))

    @classmethod
    def load(cls, folder: Path, lowercase: bool) -> "BertWordPieceTokenizer":
        import keras_hub

        return cls(keras_hub.tokenizers.BertTokenizer(vocabulary=str(folder / "vocabulary.txt"), lowercase=lowercase))

    @property
    def vocab_size(self) -> int:
        return int(self.wordpiece.vocabulary_size())

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.wordpiece.tokenize(text), dtype=np.int32)

    def encode_songs(self, songs: Sequence[str]) -> np.ndarray:
        ids: list[int] = []
        for song in self.wordpiece.tokenize(list(songs)) if songs else []:
            ids += list(song) + [self.eos_id]
        return np.asarray(ids, dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        """WordPiece text of the ids ([SEP] as a newline; [PAD], [CLS] and [MASK] left out)."""
        lines, piece = [], []
        for i in map(int, ids):
            if i == self.eos_id:
                lines.append(piece)
                piece = []
            elif i not in (self.pad_id, self.cls_id, self.mask_id):
                piece.append(i)
        lines.append(piece)
        text = "\n".join(str(self.wordpiece.detokenize(p)) if p else "" for p in lines)
        return WORDPIECE_TAG.sub(r"[\1]", text)  # WordPiece splits "[chorus]" into "[ chorus ]"

    def _save(self, folder: Path) -> dict[str, Any]:
        self.wordpiece.save_assets(str(folder))
        return {"lowercase": bool(self.wordpiece.lowercase)}


def from_preset(kind: str, cfg: Any) -> Tokenizer:
    if kind == "gpt2":
        return GPT2BPETokenizer.from_preset(cfg.preset)
    if kind == "bert":
        return BertWordPieceTokenizer.from_preset(cfg.preset)
    raise ValueError(f"no preset tokenizer of kind {kind!r}")


def load(kind: str, folder: Path) -> Tokenizer:
    if kind == "gpt2":
        return GPT2BPETokenizer.load(folder)
    if kind == "bert":
        import json

        return BertWordPieceTokenizer.load(folder, json.loads((folder / "tokenizer_config.json").read_text())["lowercase"])
    raise ValueError(f"no preset tokenizer of kind {kind!r}")
