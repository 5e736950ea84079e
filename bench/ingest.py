"""Ingestion throughput on the public PDFs: pages/s, chunks/s, and where the time goes.

    flock /tmp/consulta-cpu.lock python bench/ingest.py [--data ../shared/data] [--max-pages N]
        [--chunker recursive] [--workers 2] [--no-tables]

Ingests every PDF under ../shared/data/pdf (debian-docs, docling, pdfplumber, scotus, financebench-dev/pdfs:
about 3,500 pages) with the real pipeline (`consulta ingest` with default settings unless told otherwise)
into a temporary index, and prints JSON: files, pages, chunks, wall seconds, pages/s and chunks/s, and the
seconds and share of parsing (CPU seconds in the parse workers), chunking and embedding (this process).
The issue's goal is parse + chunk < 20% of the embedding time. --max-pages takes whole files, folder by
folder in turn, until that many pages are reached (embedding runs at about one page a second on 2 cores,
so the whole set takes about an hour). Reads the data from ../shared/data; never copies it.
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--max-pages", type=int, default=None)
    ap.add_argument("--chunker", default=None, help="ingest.chunker (default: the setting's default)")
    ap.add_argument("--workers", type=int, default=None, help="ingest.parse_workers")
    ap.add_argument("--no-tables", action="store_true", help="skip the pdfplumber table pass")
    args = ap.parse_args()
    root = args.data / "pdf"
    if not root.is_dir():
        sys.exit(f"no PDFs at {root}")
    files = pick_files(root, args.max_pages)
    ingest: dict = {}
    if args.chunker:
        ingest["chunker"] = args.chunker
    if args.workers:
        ingest["parse_workers"] = args.workers
    if args.no_tables:
        ingest["pdf_tables"] = False
    with tempfile.TemporaryDirectory(prefix="consulta-ingest-bench-") as tmp:
        services = Services(Settings(data_dir=Path(tmp), ingest=ingest))
        services.embedder.warm_up()
        t = time.perf_counter()
        report = services.pipeline.ingest(files, "bench")
        wall = time.perf_counter() - t
        s = services.settings.ingest
    tm = report.timings
    embed = tm["embed"] or 1e-9
    total = sum(tm.values()) or 1e-9
    out = {
        "files": len(files), "failed": [f.to_dict() for f in report.failed], "pages": report.pages,
        "chunks": report.chunks_added, "wall_s": round(wall, 1),
        "pages_per_s": round(report.pages / wall, 2), "chunks_per_s": round(report.chunks_added / wall, 2),
        "seconds": {k: round(v, 1) for k, v in tm.items()},
        "share": {k: round(v / total, 3) for k, v in tm.items()},
        "parse_plus_chunk_over_embed": round((tm["parse"] + tm["chunk"]) / embed, 3),
        "table_pages": sum(len(f.table_pages) for f in report.files),
        "pages_without_text": sum(len(f.pages_without_text) for f in report.files),
        "settings": {"chunker": services.chunker.settings_id, "parse_workers": s.parse_workers,
                     "pdf_tables": s.pdf_tables, "embedder": services.embedder.model_id},
        "sources": sorted({str(p.parent.relative_to(root)) for p in files}),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
