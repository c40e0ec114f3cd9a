"""CLIP's byte-level BPE tokenizer (Radford et al. 2021, after GPT-2), reading the user's merges file.

The vocabulary is the 256 byte symbols, the same symbols ending a word ("</w>"), one entry per merge in file
order, then <|startoftext|> and <|endoftext|>; its size fixes how many merges of the file are used (49408 ->
48894). Differences from the reference: `re` instead of the `regex` module (letters = word characters that are
neither digits nor "_"), and no ftfy mojibake repair (HTML entities are still unescaped).
"""

from __future__ import annotations

import gzip
import html
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..errors import InputError

PathLike = Union[str, os.PathLike]

VOCAB_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
END_OF_WORD = "</w>"
N_BYTE_SYMBOLS = 256

# Special tokens, English contractions, runs of letters, single digits, runs of other non-space characters.
_LETTERS = r"[^\W\d_]+"
_SPLIT = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|" + _LETTERS + r"|\d|(?:[^\s\w]|_)+",
                    re.IGNORECASE)


def byte_symbols() -> Dict[int, str]:
    """A printable unicode character for every byte value: printable Latin-1 bytes stand for themselves, the
    others (controls, space, soft hyphen) are moved to code points 256 and up, in byte order. Insertion order (the
    printable ones first) is the order of the first 256 vocabulary entries."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(N_BYTE_SYMBOLS):
        if b not in table:
            table[b] = chr(N_BYTE_SYMBOLS + shifted)
            shifted += 1
    return table


def clean_text(text: str) -> str:
    """Unescape HTML entities, collapse whitespace, lower-case."""
    text = html.unescape(html.unescape(text))
    return re.sub(r"\s+", " ", text).strip().lower()


def read_merges(path: PathLike, count: int) -> List[Tuple[str, str]]:
    """The first `count` merges of a CLIP merges file (.txt.gz or .txt): a header line, then "a b" per line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(f"The CLIP vocabulary {path} cannot be read ({exc}); give {VOCAB_FILE_NAME} from the "
                         "open_clip or OpenAI CLIP repository.") from None
    lines = text.rstrip("\n").split("\n")[1:1 + count]
    merges = []
    for number, line in enumerate(lines, start=2):
        parts = line.split()
        if len(parts) != 2:
            raise InputError(f"Line {number} of the CLIP vocabulary {path} is {line!r}, not a merge 'a b'; give "
                             f"{VOCAB_FILE_NAME} from the open_clip or OpenAI CLIP repository.")
        merges.append((parts[0], parts[1]))
    if len(merges) < count:
        raise InputError(f"The CLIP vocabulary {path} has {len(merges)} merges but the CLIP weights need {count} "
                         "(their vocabulary size minus 514); the file does not belong to these weights.")
    return merges


class ClipTokenizer:
    """Text -> CLIP token ids. `vocab_size` and `context_length` come from the CLIP model the ids are for."""

    def __init__(self, merges: Sequence[Tuple[str, str]], context_length: int = 77):
        if context_length < 2:
            raise InputError(f"context_length must be at least 2 (SOT and EOT), got {context_length}.")
        self.context_length = context_length
        self.byte_encoder = byte_symbols()
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + END_OF_WORD for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = {token: index for index, token in enumerate(vocab)}
        self.decoder = {index: token for token, index in self.encoder.items()}
        self.ranks = {tuple(m): rank for rank, m in enumerate(merges)}
        self.sot_id = self.encoder[SOT]
        self.eot_id = self.encoder[EOT]
        self._cache: Dict[str, Tuple[str, ...]] = {SOT: (SOT,), EOT: (EOT,)}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def bpe(self, word: str) -> Tuple[str, ...]:
        """Merge the symbols of one byte-encoded word, lowest-ranked pair first, until no listed pair remains."""
        if word in self._cache:
            return self._cache[word]
        parts = list(word[:-1]) + [word[-1] + END_OF_WORD]
        while len(parts) > 1:
            pairs = {(a, b) for a, b in zip(parts, parts[1:])}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        result = tuple(parts)
        self._cache[word] = result
        return result

    def encode(self, text: str) -> List[int]:
        """Token ids of a text, without SOT/EOT."""
        ids = []
        for piece in _SPLIT.findall(clean_text(text)):
            encoded = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[token] for token in self.bpe(encoded))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Ids back to text (words separated by spaces, as CLIP decodes)."""
        byte_decoder = {s: b for b, s in self.byte_encoder.items()}
        text = "".join(self.decoder[int(i)] for i in ids)
        data = bytearray()
        for ch in text.replace(END_OF_WORD, " "):
            data.extend(byte_decoder[ch].to_bytes(1, "little") if ch in byte_decoder else ch.encode("utf-8"))
        return data.decode("utf-8", errors="replace").strip()

    def __call__(self, texts: Union[str, Sequence[str]]) -> torch.Tensor:
        """Texts -> [N, context_length] int64: SOT, ids, EOT, zero padding. Long texts are cut, EOT kept last."""
        if isinstance(texts, str):
            texts = [texts]
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_id] + self.encode(text) + [self.eot_id]
            if len(ids) > self.context_length:
                ids = ids[:self.context_length - 1] + [self.eot_id]
            out[row, :len(ids)] = torch.tensor(ids)
        return out


def default_vocab_path(weights_path: PathLike) -> Path:
    """bpe_simple_vocab_16e6.txt.gz next to the CLIP weights file."""
    return Path(weights_path).resolve().parent / VOCAB_FILE_NAME


@lru_cache(maxsize=4)
def _cached_merges(path: str, mtime: float, count: int) -> Tuple[Tuple[str, str], ...]:
    return tuple(read_merges(path, count))


def load_tokenizer(vocab_path: PathLike, vocab_size: int = 49408, context_length: int = 77,
                   weights_path: Optional[PathLike] = None) -> ClipTokenizer:
    """The tokenizer for a CLIP model of `vocab_size` ids and `context_length` tokens, from its merges file.

    `weights_path` only improves the error message when the file is missing (it names both paths)."""
    count = vocab_size - 2 * N_BYTE_SYMBOLS - 2
    if count < 0:
        raise InputError(f"A CLIP vocabulary of {vocab_size} ids cannot hold the 514 byte and special tokens.")
    path = Path(vocab_path)
    if not path.is_file():
        beside = f" (looked for it next to the CLIP weights {weights_path})" if weights_path is not None else ""
        raise InputError(f"The CLIP vocabulary file {str(path)!r} does not exist{beside}. Give it with --clip-vocab: "
                         f"{VOCAB_FILE_NAME} ships with the open_clip repository (src/open_clip/) and the OpenAI "
                         "CLIP repository (clip/).")
    merges = _cached_merges(str(path.resolve()), path.stat().st_mtime, count)
    return ClipTokenizer(merges, context_length)
