"""Load test on loopback: N staff chatting for D minutes while an editor uploads F files, against a real server.

    python bench/load.py --json                      # 8 users, 10 minutes, 100 files (the operations figure)
    python bench/load.py --users 2 --minutes 1 --files 10 --model qwen2.5-coder-0.5b   # a quick look

It starts `consulta serve` on a free port with a fresh data dir, ingests docs/ as the chat corpus, creates an admin
key (the editor) and one reader per chat user with a read grant, then runs the chat loops (streamed /v1/ask) and the
uploads (POST /v1/documents, one job per batch) at the same time. Afterwards it checks that every uploaded file is
searchable by a phrase that only it contains. Prints JSON: errors by kind, latency p50/p95 (time to first token and
to the last), answers and uploads done, the server's peak resident memory (VmHWM), and the searchability check.
Bounded: the run stops at --minutes (answers in flight are awaited up to --grace seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "What does Consulta do?", "Which file formats can I ingest?", "How do I start Consulta?",
    "¿Qué hace Consulta con los documentos?", "Com es configura el model?", "How are answers cited?",
    "What happens when the documents do not answer a question?", "Where are the settings documented?",
    "¿Cómo se evalúa la calidad de las respuestas?", "Quins idiomes entén Consulta?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "consulta", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, check=True)


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(round(q * (len(v) - 1))))], 3)


def make_files(folder: Path, n: int) -> list[tuple[Path, str]]:
    """n Markdown files, each with a phrase no other file has (to check that it is searchable afterwards)."""
    rng = random.Random(7)
    topics = ["travel", "leave", "procurement", "safety", "training", "archives", "budget", "IT equipment"]
    out = []
    for i in range(n):
        code = f"form {rng.randrange(10**6, 10**7)}-{i}"
        topic = rng.choice(topics)
        body = "\n\n".join(f"{topic.title()} rule {j}: staff submit {code} to the {topic} office within "
                           f"{rng.randint(2, 30)} days; approvals take {rng.randint(1, 9)} working days."
                           for j in range(rng.randint(3, 12)))
        path = folder / f"policy-{i:03d}.md"
        path.write_text(f"# {topic.title()} policy {i}\n\n{body}\n", encoding="utf-8")
        out.append((path, code))
    return out


async def chat_user(client: httpx.AsyncClient, key: str, stop_at: float, rng: random.Random, stats: dict) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    while time.monotonic() < stop_at:
        question = rng.choice(QUESTIONS)
        t0 = time.monotonic()
        ttft = None
        try:
            async with client.stream("POST", "/v1/ask", json={"question": question, "stream": True},
                                     headers=headers) as r:
                if r.status_code != 200:
                    await r.aread()
                    stats["errors"].append(f"ask HTTP {r.status_code}: {r.text[:200]}")
                    continue
                event = None
                async for line in r.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                        if event == "token" and ttft is None:
                            ttft = time.monotonic() - t0
                        elif event == "error":
                            stats["errors"].append("ask error event")
                    elif line.startswith("data: ") and event == "error":
                        stats["errors"][-1] += ": " + line[6:200]
        except httpx.HTTPError as e:
            stats["errors"].append(f"ask {type(e).__name__}: {e}")
            continue
        stats["answers"] += 1
        stats["total_s"].append(time.monotonic() - t0)
        if ttft is not None:
            stats["ttft_s"].append(ttft)


async def editor(client: httpx.AsyncClient, key: str, files: list[tuple[Path, str]], batch: int,
                 stats: dict) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    for i in range(0, len(files), batch):
        part = files[i:i + batch]
        t0 = time.monotonic()
        form = [("files", (p.name, p.read_bytes(), "text/markdown")) for p, _ in part]
        try:
            r = await client.post("/v1/documents", files=form, data={"collection": "load"}, headers=headers)
            if r.status_code != 202:
                stats["errors"].append(f"upload HTTP {r.status_code}: {r.text[:200]}")
                continue
            job = r.json()
            while job["status"] not in ("done", "failed"):
                await asyncio.sleep(1.0)
                job = (await client.get(f"/v1/jobs/{job['job_id']}", headers=headers)).json()
        except httpx.HTTPError as e:
            stats["errors"].append(f"upload {type(e).__name__}: {e}")
            continue
        failed = [f for f in job["files"] if f["status"] == "failed"]
        if job["status"] != "done" or failed:
            stats["errors"].append(f"upload job {job['status']}: {failed[:2]}")
        stats["uploaded"] += len(part) - len(failed)
        stats["upload_s"].append(time.monotonic() - t0)


async def check_searchable(client: httpx.AsyncClient, key: str, files: list[tuple[Path, str]]) -> list[str]:
    missing = []
    headers = {"Authorization": f"Bearer {key}"}
    for path, code in files:
        r = await client.post("/v1/search", json={"query": code, "collection": "load", "k": 3}, headers=headers)
        hits = r.json().get("hits", []) if r.status_code == 200 else []
        if not any(Path(h["source"]).name == path.name for h in hits):
            missing.append(path.name)
    return missing


async def run(args: argparse.Namespace, url: str, admin_key: str, reader_keys: list[str], files, pid: int) -> dict:
    stats = {"errors": [], "answers": 0, "ttft_s": [], "total_s": [], "uploaded": 0, "upload_s": []}
    stop_at = time.monotonic() + args.minutes * 60
    timeout = httpx.Timeout(args.grace + args.minutes * 60, connect=10)
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
        t0 = time.monotonic()
        rngs = [random.Random(i) for i in range(args.users)]
        tasks = [chat_user(client, reader_keys[i], stop_at, rngs[i], stats) for i in range(args.users)]
        tasks.append(editor(client, admin_key, files, args.batch, stats))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - t0
        missing = await check_searchable(client, admin_key, files)
    return {
        "users": args.users, "minutes": args.minutes, "files": len(files), "model": args.model,
        "elapsed_s": round(elapsed, 1), "answers": stats["answers"],
        "errors": len(stats["errors"]), "error_samples": stats["errors"][:5],
        "ttft_p50_s": pct(stats["ttft_s"], 0.5), "ttft_p95_s": pct(stats["ttft_s"], 0.95),
        "answer_p50_s": pct(stats["total_s"], 0.5), "answer_p95_s": pct(stats["total_s"], 0.95),
        "uploaded": stats["uploaded"], "upload_job_p50_s": pct(stats["upload_s"], 0.5),
        "upload_job_p95_s": pct(stats["upload_s"], 0.95),
        "searchable_after": len(files) - len(missing), "not_searchable": missing[:10],
        "server_peak_rss_mb": peak_rss_mb(pid),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--batch", type=int, default=5, help="files per upload (one ingestion job each)")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--grace", type=float, default=300, help="seconds answers in flight may take after the end")
    ap.add_argument("--data-dir", type=Path, default=None, help="default: a fresh temporary folder")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="consulta-load-"))
    data = args.data_dir or work / "data"
    env = {**os.environ, "CONSULTA_DATA_DIR": str(data), "CONSULTA_SERVING__MODEL": args.model,
           "CONSULTA_SERVING__MAX_TOKENS": str(args.max_tokens), "HF_HUB_OFFLINE": "1"}
    models = REPO / "data" / "models"
    if models.is_dir() and not (data / "models").exists():  # reuse models assembled by `make run`
        data.mkdir(parents=True, exist_ok=True)
        (data / "models").symlink_to(models.resolve())
    cli(["models", "prepare"], env)
    cli(["ingest", str(REPO / "docs"), "--collection", "consulta"], env)
    admin = json.loads(cli(["users", "create-admin", "--json"], env).stdout)
    reader_keys = []
    for i in range(args.users):
        cli(["users", "create", f"reader{i}", "--role", "reader", "--json"], env)
        cli(["users", "grant", "consulta", "--permission", "read", "--user", f"reader{i}"], env)
        reader_keys.append(json.loads(cli(["users", "key", f"reader{i}", "--json"], env).stdout)["api_key"])
    files_dir = work / "upload"
    files_dir.mkdir()
    files = make_files(files_dir, args.files)

    port = free_port()
    log = open(work / "api.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "consulta", "serve", "--port", str(port)], env=env, cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if proc.poll() is not None:
                raise SystemExit(f"the server exited; see {work / 'api.log'}")
            time.sleep(1)
        result = asyncio.run(run(args, url, admin["api_key"], reader_keys, files, proc.pid))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    result["server_log"] = str(work / "api.log")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:>22}: {v}")


if __name__ == "__main__":
    main()
