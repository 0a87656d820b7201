"""Control tokens that tell a model which song it writes: `<tag:rap><decade:1990s><artist:...><lang:es>`.

Each song the model reads starts with one control token per configured field (`conditioning.fields`),
then its lyrics; with `conditioning.repeat: line` (the default) the same prefix also follows every
line break, so the model never reads far without it. The tokens are whole tokens in every tokenizer
(lyricslab.text.tokenizers), the model learns them like any other, and `generate genre=rap` puts them in
front of the prompt (and after each line it writes).

Which values a model knows is fixed by the train split: every tag, decade, year and language seen
there, and the `conditioning.top_artists` artists with the most train songs (the rest are
`<artist:other>`). A val/test or prompted value the model never saw becomes `<field:other>` when
the model knows `other`, and is left out otherwise; `conditioning.drop` leaves fields out of some
training songs on purpose, so a model learns prefixes with fields missing too.

Control tokens are given, never predicted: evaluation does not score them and bits/char does not
count them as characters (see lyricslab.scoring.scorers's `unscored_ids`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from lyricslab.data.genius import parse_features

FIELDS = ("tag", "decade", "year", "artist", "lang")
REPEATS = ("line", "song")
CONTROL_PATTERN = re.compile(r"<(tag|decade|year|artist|lang):([^<>\n]{1,80})>")
OTHER = "other"
# Part of the conditioned token-cache key: bump when the prefixes a config produces change.
CONDITIONING_VERSION = 1
ARTIFACT = "conditioning.json"
# What a `generate` option is called -> the field it sets.
REQUEST_KEYS = {"genre": "tag", "tag": "tag", "decade": "decade", "year": "year", "artist": "artist",
                "lang": "lang", "language": "lang"}


class ConditionError(ValueError):
    """A conditioning setting or a requested value that cannot work; the message says what can."""


def clean_value(value: Any) -> str:
    """A value as it appears inside a control token: no angle brackets or line breaks, one space, <= 60 chars."""
    text = re.sub(r"\s+", " ", re.sub(r"[<>]", "", str(value))).strip()[:60].strip()
    return text or OTHER


def control(field_name: str, value: Any) -> str:
    return f"<{field_name}:{clean_value(value)}>"


def strip_controls(text: str) -> str:
    """The text without its control tokens (generated songs are shown and measured without them)."""
    return CONTROL_PATTERN.sub("", text)


def year_of(value: Any) -> int | None:
    try:
        year = int(float(str(value).strip()))
    except ValueError:
        return None
    return year if 1000 <= year <= 2999 else None


def decade_of(value: Any) -> str:
    year = year_of(value)
    return OTHER if year is None else f"{year // 10 * 10}s"


def several_languages(language: Any) -> bool:
    """data.language keeps several languages: a list of two or more codes, or null (all of them)."""
    if language is None:
        return True
    return not isinstance(language, str) and len(list(language)) > 1


def fields_of(cfg: Any) -> list[str]:
    """The fields a run conditions on, in prefix order: `conditioning.fields`, then `lang` when
    `conditioning.language_token` is true, or `auto` and data.language keeps several languages."""
    cond = cfg.get("conditioning") or {}
    fields = [str(f) for f in (cond.get("fields") or [])]
    unknown = [f for f in fields if f not in FIELDS]
    if unknown:
        raise ConditionError(f"conditioning.fields: unknown field(s) {unknown}; choose from {list(FIELDS)}")
    if len(set(fields)) < len(fields):
        raise ConditionError(f"conditioning.fields names a field twice: {fields}")
    if "decade" in fields and "year" in fields:
        raise ConditionError("conditioning.fields: pick decade or year, not both")
    token = cond.get("language_token", "auto")
    if token not in ("auto", True, False):
        raise ConditionError(f"conditioning.language_token must be auto, true or false, not {token!r}")
    wants_lang = token is True or (token == "auto" and several_languages(cfg.data.get("language")))
    if wants_lang and "lang" not in fields:
        fields.append("lang")
    return fields


def _dropped(song_id: Any, field_name: str, share: float) -> bool:
    """Whether `conditioning.drop` leaves this field out of this training song: a stable hash, so the
    cached token streams are the same on every run."""
    if share <= 0:
        return False
    digest = hashlib.blake2b(f"{song_id}:{field_name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < share


@dataclass
class Conditions:
    """The fields a model conditions on and the values it knows for each (from its train split)."""

    fields: list[str]
    known: dict[str, list[str]] = field(default_factory=dict)
    features_as_artists: bool = False
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # train songs per value, for the artifact

    # ---- raw values of one song ------------------------------------------------------------------
    def raw_values(self, row: Mapping[str, Any], field_name: str) -> list[str]:
        if field_name == "tag":
            return [clean_value(row.get("tag"))]
        if field_name == "decade":
            return [decade_of(row.get("year"))]
        if field_name == "year":
            year = year_of(row.get("year"))
            return [str(year) if year is not None else OTHER]
        if field_name == "lang":
            return [clean_value(row.get("language"))]
        artists = [clean_value(row.get("artist"))]
        if self.features_as_artists:
            features = row.get("features")
            names = parse_features(features if isinstance(features, str) else None)
            artists += [clean_value(name) for name in names if clean_value(name) not in artists]
        return artists

    def _tokens(self, row: Mapping[str, Any], field_name: str) -> list[str]:
        """This song's tokens for one field: known values; an unknown main value becomes `other` if known."""
        known = set(self.known.get(field_name, ()))
        values = self.raw_values(row, field_name)
        main, extra = values[0], values[1:]
        out = [main] if main in known else [OTHER] if OTHER in known else []
        out += [v for v in extra if v in known and v != OTHER]  # featured artists: known ones only
        return [control(field_name, v) for v in out]

    def prefix(self, row: Mapping[str, Any], drop: float = 0.0) -> str:
        return "".join(token for name in self.fields if not _dropped(row.get("id"), name, drop)
                       for token in self._tokens(row, name))

    # ---- building ---------------------------------------------------------------------------------
    @classmethod
    def fit(cls, train_rows: Sequence[Mapping[str, Any]], fields: list[str], top_artists: int,
            features_as_artists: bool) -> "Conditions":
        """Known values from the train split: all of them, except artists (the top-K by song count)."""
        cond = cls(fields, {}, features_as_artists)
        for name in fields:
            counts: Counter = Counter()
            for row in train_rows:
                counts.update(set(cond.raw_values(row, name)))
            if name == "artist":
                # Most songs first, ties by name: the same K on every run.
                ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                keep = [a for a, _ in ranked if a != OTHER][:top_artists]
                rest = sum(n for a, n in counts.items() if a not in keep)
                counts = Counter({a: counts[a] for a in keep})
                if rest:
                    counts[OTHER] = rest
            cond.known[name] = sorted(counts)
            cond.counts[name] = dict(counts.most_common())
        return cond

    @classmethod
    def from_tokens(cls, fields: list[str], tokens: Iterable[str], features_as_artists: bool = False) -> "Conditions":
        """What a trained model knows, read back from its tokenizer's control tokens."""
        known: dict[str, set[str]] = {name: set() for name in fields}
        for token in tokens:
            match = CONTROL_PATTERN.fullmatch(token)
            if match and match.group(1) in known:
                known[match.group(1)].add(match.group(2))
        return cls(fields, {k: sorted(v) for k, v in known.items()}, features_as_artists)

    def tokens(self) -> list[str]:
        return [control(name, v) for name in self.fields for v in self.known.get(name, [])]

    def to_json(self) -> dict[str, Any]:
        return {"fields": self.fields, "features_as_artists": self.features_as_artists, "known": self.known,
                "train_songs": self.counts}

    # ---- generation requests ----------------------------------------------------------------------
    def request_prefix(self, request: Mapping[str, Any]) -> str:
        """Control tokens for `generate genre=rap year=1994 artist=...`; ConditionError names the known values."""
        given = {key: str(value) for key, value in request.items() if value not in (None, "")}
        if not given:
            return ""
        if not self.fields:
            names = ", ".join(f"{k}=" for k in given)
            raise ConditionError(f"this model was trained without conditioning, so it takes no {names}; train one "
                                 f"with conditioning.fields=[tag,decade,artist]")
        wanted: dict[str, str] = {}
        if "year" in given and "decade" in given:
            raise ConditionError("pass year= or decade=, not both")
        for key, value in given.items():
            name = REQUEST_KEYS[key]
            if name == "year" and "decade" in self.fields and "year" not in self.fields:
                if year_of(value) is None:
                    raise ConditionError(f"year must be a year such as 1994, not {value!r}")
                name, value = "decade", decade_of(value)
            elif name == "decade":
                value = value if value.endswith("s") else f"{value}s"
                if year_of(value[:-1]) is None:
                    raise ConditionError(f"decade must be a decade such as 1990s, not {given[key]!r}")
                value = decade_of(value[:-1])
            if name not in self.fields:
                raise ConditionError(f"this model is conditioned on {', '.join(self.fields)}, not {name}; "
                                     f"leave out {key}=")
            wanted[name] = self._known_value(key, name, value)
        return "".join(control(name, wanted[name]) for name in self.fields if name in wanted)

    def _known_value(self, key: str, name: str, value: str) -> str:
        known = self.known.get(name, [])
        value = clean_value(value)
        if value in known:
            return value
        folded = {k.casefold(): k for k in known}
        if value.casefold() in folded:
            return folded[value.casefold()]
        shown = ", ".join(known[:30]) + (f", ... ({len(known)} in all, listed in the run's {ARTIFACT})"
                                         if len(known) > 30 else "")
        raise ConditionError(f"unknown {key} {value!r}; this model knows: {shown or 'none'}")


@dataclass
class Conditioned:
    """What the model reads: each split's songs with their control prefixes, and where its tokens are cached."""

    texts: dict[str, list[str]]
    conditions: Conditions | None
    cache_path: Path | None


def repeat_of(cfg: Any) -> str:
    """Where a song's control prefix goes: `song` (once, before its lyrics) or `line` (also after every
    line break). A run whose config has no `repeat` (trained before it existed) used `song`."""
    repeat = (cfg.get("conditioning") or {}).get("repeat", "song")
    if repeat not in REPEATS:
        raise ConditionError(f"conditioning.repeat must be one of {list(REPEATS)}, not {repeat!r}")
    return repeat


def with_prefix(prefix: str, text: str, repeat: str) -> str:
    """`text` as a conditioned model reads it: `prefix` first and, with repeat=line, after every line
    break too. Why repeat: a prefix at the head of a song alone is hundreds to thousands of characters
    from most of its lyrics, far past the 64-token windows that train a carried-state LSTM, so the
    model never learns to keep it (bench conditioning: own and wrong tags differed in the 4th decimal)."""
    if not prefix:
        return text
    return prefix + (text.replace("\n", "\n" + prefix) if repeat == "line" else text)


def settings(cfg: Any) -> tuple[int, bool, float]:
    cond = cfg.get("conditioning") or {}
    top = cond.get("top_artists", 50)
    drop = cond.get("drop", 0.0)
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise ConditionError(f"conditioning.top_artists must be a whole number >= 0, not {top!r}")
    if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 <= drop < 1:
        raise ConditionError(f"conditioning.drop must be a number in [0, 1), not {drop!r}")
    return top, bool(cond.get("features_as_artists", False)), float(drop)


def check(cfg: Any) -> None:
    """Raise ConditionError for a conditioning block no run could use (before TensorFlow loads)."""
    fields_of(cfg)
    settings(cfg)
    repeat_of(cfg)


def condition_splits(cfg: Any, splits: Any) -> Conditioned:
    """Prefix every song of `splits` (a lyricslab.data.Splits) with its control tokens; unchanged when off."""
    texts = {name: list(getattr(splits, name)) for name in ("train", "val", "test")}
    fields = fields_of(cfg)
    if not fields:
        return Conditioned(texts, None, splits.cache_path)
    top, features, drop = settings(cfg)
    repeat = repeat_of(cfg)
    frame = splits.frame
    rows = {name: frame[frame["split"] == name].to_dict("records") for name in texts}
    cond = Conditions.fit(rows["train"], fields, top, features)
    train_prefixes = [cond.prefix(row, drop) for row in rows["train"]]
    # A value whose every train song dropped it is never seen: the model does not know it.
    seen = set(CONTROL_PATTERN.findall("".join(train_prefixes)))
    cond.known = {name: [v for v in values if (name, v) in seen] for name, values in cond.known.items()}
    prefixes = {"train": train_prefixes, **{name: [cond.prefix(row) for row in rows[name]] for name in ("val", "test")}}
    conditioned = {name: [with_prefix(p, t, repeat) for p, t in zip(prefixes[name], texts[name])] for name in texts}
    blob = json.dumps({"v": CONDITIONING_VERSION, "fields": fields, "top": top, "features": features, "drop": drop,
                       "repeat": repeat}, sort_keys=True)
    key = hashlib.sha256(blob.encode()).hexdigest()[:12]
    path = Path(f"{splits.cache_path}-cond-{key}") if splits.cache_path is not None else None
    return Conditioned(conditioned, cond, path)


def bundle_conditions(cfg: Any, tokenizer: Any) -> Conditions:
    """The conditions of a trained model: its config's fields, the values its tokenizer has tokens for."""
    features = bool((cfg.get("conditioning") or {}).get("features_as_artists", False))
    tokens = getattr(tokenizer, "control_tokens", list)()  # a tokenizer without control tokens knows none
    return Conditions.from_tokens(fields_of(cfg), tokens, features)


def control_fields(tokenizer: Any) -> list[tuple[int, str]]:
    """(id, field) of each control token the tokenizer has as a single token."""
    out = []
    for token in getattr(tokenizer, "control_tokens", list)():
        ids = tokenizer.encode(token)
        if len(ids) == 1:
            out.append((int(ids[0]), CONTROL_PATTERN.fullmatch(token).group(1)))
    return out


def conditioned_songs(cfg: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], lyrics: Sequence[str]) -> list[str]:
    """Songs (e.g. of another CSV) as a trained model reads them: each with its control prefix."""
    cond = bundle_conditions(cfg, tokenizer)
    if not cond.fields:
        return list(lyrics)
    repeat = repeat_of(cfg)
    return [with_prefix(cond.prefix(row), text, repeat) for row, text in zip(rows, lyrics)]
