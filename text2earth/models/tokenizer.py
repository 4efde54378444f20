"""The CLIP BPE tokenizer (the one SD2 / OpenCLIP ViT-H and Text2Earth use), built from local files.

The vocabulary ships inside the ``open_clip_torch`` wheel as ``bpe_simple_vocab_16e6.txt.gz``;
:func:`write_clip_tokenizer_files` turns it into the ``vocab.json`` + ``merges.txt`` pair that
``transformers.CLIPTokenizer`` reads. The result is committed under ``text2earth/assets`` so no
run needs the network.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from transformers import CLIPTokenizer

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "clip_tokenizer"
N_MERGES = 49152 - 256 - 2  # the merges OpenCLIP keeps; vocab = 2*256 bytes + merges + 2 specials = 49408


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2 / CLIP reversible byte -> printable-character table.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def write_clip_tokenizer_files(bpe_gz: str | Path, out_dir: str | Path) -> Path:
    """Write ``vocab.json``/``merges.txt`` for ``CLIPTokenizer`` from OpenCLIP's BPE file."""
    with gzip.open(bpe_gz, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = lines[1 : N_MERGES + 1]
    byte_chars = list(_bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return out


def load_clip_tokenizer(folder: str | Path = ASSET_DIR, max_length: int = 77) -> CLIPTokenizer:
    """The CLIP tokenizer configured as SD2's (``!`` pads, 77 tokens)."""
    return CLIPTokenizer.from_pretrained(str(folder), pad_token="!", model_max_length=max_length)
