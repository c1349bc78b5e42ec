"""Text <-> token ids with the `tokenizers` runtime (the only tokenizer dependency of serving).

`tokenizer.json` carries its own normalizer, pre-tokenizer and post-processor (which appends
EOS, or adds BOS, as the source model expects); heed adds only the language tag, as a prefix id.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer


class TextCodec:
    def __init__(self, path: Path):
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

    def encode(self, texts: list[str], prefix: list[int] = ()) -> list[list[int]]:
        return [[*prefix, *e.ids] for e in self.tokenizer.encode_batch(texts)]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def tokens(self, ids: list[int]) -> list[str]:
        """The vocabulary strings of ids, special tokens included (labels for an alignment)."""
        return [self.tokenizer.id_to_token(i) for i in ids]
