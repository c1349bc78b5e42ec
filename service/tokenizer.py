"""Text <-> token ids with the `tokenizers` runtime (the only tokenizer dependency of serving).

`tokenizer.json` carries its own normalizer, pre-tokenizer and post-processor (which appends
EOS, or adds BOS, as the source model expects); heed adds only the language tags: ids before the
text's (a target tag, or the source's for M2M100 and NLLB) and after them (NLLB's legacy source tag).
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer


class TextCodec:
    def __init__(self, path: Path):
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

    def encode(
        self, texts: list[str], prefix: list[int] = (), suffix: list[int] = (), special_tokens: bool = True
    ) -> list[list[int]]:
        """`special_tokens` False: without the post-processor's (BOS, EOS), as transformers
        tokenizes a prompt rendered from a chat template, which holds them already."""
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=special_tokens)
        return [[*prefix, *e.ids, *suffix] for e in encodings]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def tokens(self, ids: list[int]) -> list[str]:
        """The vocabulary strings of ids, special tokens included (labels for an alignment)."""
        return [self.tokenizer.id_to_token(i) for i in ids]
