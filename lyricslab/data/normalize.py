"""Lyrics clean-up: Genius section headers become a small set of structure tags.

`[Chorus: A & B]`, `[Coro]` or `[Hook]` all become `[chorus]`, so a model sees one token
per section type and can learn song structure. Line breaks are kept.
"""

from __future__ import annotations

import re

# Order matters: "pre-chorus" must match before "chorus".
_SECTION_WORDS = [
    ("pre-chorus", r"pre[- ]?(chorus|coro|hook|refrain)"),
    ("post-chorus", r"post[- ]?(chorus|coro|hook)"),
    ("chorus", r"chorus|coro|refrain|hook|estribillo"),
    ("verse", r"verse|verso|strophe|couplet"),
    ("bridge", r"bridge|puente"),
    ("intro", r"intro"),
    ("outro", r"outro"),
    ("interlude", r"interlude|instrumental|break|breakdown|drop|solo|skit"),
]
_SECTION_RE = [(tag, re.compile(rf"^\s*({pattern})\b", re.I)) for tag, pattern in _SECTION_WORDS]

STRUCTURE_TAGS = [f"[{tag}]" for tag, _ in _SECTION_WORDS] + ["[section]"]
TAG_PATTERN = re.compile("|".join(re.escape(t) for t in STRUCTURE_TAGS))

_HEADER_LINE = re.compile(r"^[ \t]*\[([^\]\n]*)\][ \t]*$", re.M)
# Scraping debris in the Genius dump: "You might also like" lines and a trailing "123Embed".
_DEBRIS = re.compile(r"^You might also like.*$|\d*Embed\s*\Z", re.M)
_MANY_BLANKS = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.M)


def section_tag(header: str) -> str:
    """Map a header's text ('Verse 2: A & B') to a structure tag ('[verse]')."""
    name = header.split(":", 1)[0]
    for tag, pattern in _SECTION_RE:
        if pattern.match(name):
            return f"[{tag}]"
    return "[section]"


def normalize_lyrics(text: str, structure: str = "tags") -> str:
    """Clean one song. structure: 'tags' (map headers), 'keep' (leave them) or 'drop' (remove)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _DEBRIS.sub("", text)
    if structure == "tags":
        text = _HEADER_LINE.sub(lambda m: section_tag(m.group(1)), text)
    elif structure == "drop":
        text = _HEADER_LINE.sub("", text)
    elif structure != "keep":
        raise ValueError(f"data.structure must be tags, keep or drop, not {structure!r}")
    text = _TRAILING_SPACE.sub("", text)
    text = _MANY_BLANKS.sub("\n\n", text)
    return text.strip()


def render_structure_tags(text: str) -> str:
    """Turn '[chorus]' back into a readable '[Chorus]' header line."""
    return TAG_PATTERN.sub(lambda m: "[" + m.group(0)[1:-1].title() + "]", text)
