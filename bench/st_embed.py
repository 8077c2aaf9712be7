"""What a sentence-transformers user writes to do `npsqueeze embed MODEL --file FILE --json`: the
baseline of bench/compare.py's whole-job timing. One JSON line {"line", "text", "embedding"} per line
of FILE, in order.

    HF_HUB_OFFLINE=1 python bench/st_embed.py MODEL_FOLDER FILE [--batch-size 32]
"""

import argparse
import json

from sentence_transformers import SentenceTransformer

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("file")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    with open(args.file, encoding="utf-8") as f:
        texts = f.read().split("\n")
    if texts and texts[-1] == "":
        texts.pop()
    vectors = SentenceTransformer(args.model, device="cpu").encode(texts, batch_size=args.batch_size)
    for n, (text, v) in enumerate(zip(texts, vectors), 1):
        print(json.dumps({"line": n, "text": text, "embedding": v.tolist()}, ensure_ascii=False))
