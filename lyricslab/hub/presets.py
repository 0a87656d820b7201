"""keras_hub presets for the pretrained families: finding one offline first, and building tiny ones.

    python -m lyricslab.presets tiny-gpt2 presets/tiny-gpt2   # random 2-layer GPT-2, BPE from the demo corpus
    python -m lyricslab.presets tiny-bert presets/tiny-bert   # random 2-layer BERT, WordPiece from the demo corpus

`model.preset` is a local preset folder (what keras_hub's `save_to_preset` writes) or, online
with Kaggle credentials, a built-in handle such as `gpt2_base_en`. No machine here reaches a
model hub, so tests and the demo use the tiny presets this module builds: random weights, the
real keras_hub classes and file layout, so the loading code is the same as for the real model.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from lyricslab.config.errors import ConfigError
from lyricslab.data.normalize import normalize_lyrics
from lyricslab.data.prepare import demo_path

# family -> (the keras_hub backbone class name, a built-in handle to suggest, the tiny preset's CLI name)
FAMILIES = {"gpt2": ("GPT2Backbone", "gpt2_base_en", "tiny-gpt2"),
            "bert": ("BertBackbone", "bert_base_en_uncased", "tiny-bert")}
END_OF_TEXT = "<|endoftext|>"


class PresetError(ConfigError):
    """A preset that cannot be loaded; the message says how to get one (a ConfigError: one `error:` line)."""


def how_to_get(family: str, preset: str) -> str:
    _, handle, tiny = FAMILIES[family]
    return (f"build a tiny one with `python -m lyricslab.presets {tiny} {preset}`, copy a preset folder (what "
            f"keras_hub's save_to_preset writes) from a machine that has one, or, online with Kaggle "
            f"credentials, use model.preset={handle}")


def builtin_presets(family: str) -> set[str]:
    import keras_hub

    return set(getattr(keras_hub.models, FAMILIES[family][0]).presets)


def resolve_preset(preset: Any, family: str) -> str:
    """An absolute preset folder, or a hub handle passed on as it is.

    A relative path is made absolute: keras_hub sends a string that spells a built-in preset name
    (`gpt2_base_en`) to Kaggle even when a folder of that name is right here.
    """
    if preset is None or not str(preset).strip():
        raise PresetError(f"model.preset is empty; {how_to_get(family, 'presets/' + FAMILIES[family][2])}")
    text = str(preset).strip()
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise PresetError(f"{text} is a folder but not a keras_hub preset (no config.json); "
                              f"{how_to_get(family, text)}")
        return str(path.resolve())
    if "://" in text or text in builtin_presets(family):
        return text
    raise PresetError(f"model.preset={text} is neither a preset folder nor a keras_hub preset name; "
                      f"{how_to_get(family, text)}")


def _from_hub(loader: Any, preset: str, family: str, **kwargs: Any) -> Any:
    """`loader.from_preset(preset)`; a failed download (offline, no credentials) is one PresetError."""
    try:
        return loader.from_preset(preset, **kwargs)
    except Exception as err:  # noqa: BLE001 - kagglehub, requests and OS errors all mean "could not fetch it"
        if Path(preset).is_dir():
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise PresetError(f"could not fetch preset {preset} ({first}); offline or without Kaggle credentials, "
                          f"{how_to_get(family, 'presets/' + FAMILIES[family][2])}") from None


def load_backbone(preset: Any, family: str, **kwargs: Any) -> Any:
    """The preset's keras_hub backbone; kwargs override its config (e.g. dropout)."""
    import keras_hub

    cls = getattr(keras_hub.models, FAMILIES[family][0])
    return _from_hub(cls, resolve_preset(preset, family), family, **kwargs)


def load_hub_tokenizer(preset: Any, family: str) -> Any:
    """The preset's keras_hub tokenizer (GPT2Tokenizer or BertTokenizer)."""
    import keras_hub

    cls = {"gpt2": keras_hub.tokenizers.GPT2Tokenizer, "bert": keras_hub.tokenizers.BertTokenizer}[family]
    return _from_hub(cls, resolve_preset(preset, family), family)


def backbone_config(preset: Any, family: str) -> dict[str, Any]:
    """The backbone's constructor arguments (layers, widths, vocabulary) without loading its weights."""
    resolved = resolve_preset(preset, family)
    if Path(resolved).is_dir():
        return json.loads((Path(resolved) / "config.json").read_text())["config"]
    return load_backbone(resolved, family, load_weights=False).get_config()


# --- tiny presets, built here ---------------------------------------------------------------------

def demo_texts() -> list[str]:
    """The demo corpus' songs, normalised as training sees them (structure tags and all)."""
    with demo_path().open(newline="", encoding="utf-8") as f:
        return [normalize_lyrics(row["lyrics"]) for row in csv.DictReader(f)]


def train_byte_level_bpe(texts: list[str], vocab_size: int) -> tuple[dict[str, int], list[str]]:
    """GPT-2 style byte-level BPE (Hugging Face `tokenizers`): vocabulary and merges.

    `<|endoftext|>` goes last, as in the real GPT-2: keras_hub pads with id 0, so it must not be 0.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    hf.train_from_iterator(texts, trainer=trainer)
    model = json.loads(hf.to_str())["model"]
    vocab = dict(sorted(model["vocab"].items(), key=lambda item: item[1]))
    vocab[END_OF_TEXT] = len(vocab)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    for merge in merges:  # keras_hub rejects a merge whose parts or result are not tokens
        a, b = merge.split(" ")
        if not {a, b, a + b} <= vocab.keys():
            raise ValueError(f"BPE merge {merge!r} has a part outside the vocabulary")
    return vocab, merges


def save_preset(out: Path, backbone: Any, tokenizer: Any) -> Path:
    """A keras_hub preset folder: the backbone's config and weights, and its tokenizer's assets."""
    out.mkdir(parents=True, exist_ok=True)
    backbone.save_to_preset(str(out))
    tokenizer.save_to_preset(str(out))
    return out


def build_tiny_gpt2(out: Path, texts: list[str] | None = None, vocab_size: int = 1000, layers: int = 2,
                    heads: int = 2, width: int = 64, ff_dim: int = 128, context: int = 256, seed: int = 0) -> Path:
    """A random-weight GPT-2 preset (keras_hub GPT2Backbone + GPT2Tokenizer) in `out`."""
    import keras
    import keras_hub

    vocab, merges = train_byte_level_bpe(texts if texts is not None else demo_texts(), vocab_size)
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=len(vocab), num_layers=layers, num_heads=heads,
                                             hidden_dim=width, intermediate_dim=ff_dim, max_sequence_length=context)
    tokenizer = keras_hub.tokenizers.GPT2Tokenizer(vocabulary=vocab, merges=merges)
    return save_preset(out, backbone, tokenizer)


def build_tiny_bert(out: Path, texts: list[str] | None = None, vocab_size: int = 1000, layers: int = 2,
                    heads: int = 2, width: int = 64, ff_dim: int = 128, context: int = 256, seed: int = 0) -> Path:
    """A random-weight BERT preset (keras_hub BertBackbone + BertTokenizer, cased WordPiece) in `out`."""
    import keras
    import keras_hub
    import tensorflow as tf

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD] is id 0, as keras_hub's BERT expects
    # tf.data on every backend: keras_hub's WordPiece trainer is TensorFlow Text; a list would be file names.
    corpus = tf.data.Dataset.from_tensor_slices(texts if texts is not None else demo_texts())
    vocab = keras_hub.tokenizers.compute_word_piece_vocabulary(corpus, vocabulary_size=vocab_size, lowercase=False,
                                                               reserved_tokens=specials)
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(vocab), num_layers=layers, num_heads=heads,
                                             hidden_dim=width, intermediate_dim=ff_dim, max_sequence_length=context)
    tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=vocab, lowercase=False)
    return save_preset(out, backbone, tokenizer)


BUILDERS = {"tiny-gpt2": build_tiny_gpt2, "tiny-bert": build_tiny_bert}
