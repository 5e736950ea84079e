"""Reports of a run: one self-contained HTML file, summary.json, summary.md and rows.jsonl in one folder.

Where they go: `<data_dir>/reports/<UTC timestamp>/` unless --report names a folder; every run also appends
one line per config to `<data_dir>/reports/history.jsonl`, which is how a later run finds the earlier one
it compares with (same dataset, same questions, same config name).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from eval.metrics import METRIC_DEFINITIONS
from eval.plots import bar_chart, box_plot
from eval.runner import failed, is_failure

QUALITY_PREFIXES = ("retrieval.", "answer.", "refusal.", "citation.", "faithfulness", "answer_relevance",
                    "context_relevance", "noise.f1")
LOWER_IS_BETTER = ("refusal.false_rate", "noise.f1_drop", "latency.", "tokens.")


def definition(metric: str) -> str:
    return METRIC_DEFINITIONS.get(re.sub(r"@\d+$", "@k", metric), "")


def previous_runs(history: Path, run_key: str, configs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The latest earlier entry per config name with the same run key (dataset, limit, seed, k)."""
    found: dict[str, dict[str, Any]] = {}
    if not history.is_file():
        return found
    for line in history.read_text(encoding="utf-8").splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if e.get("run_key") == run_key and e.get("config") in configs:
            found[e["config"]] = e
    return found


def append_history(history: Path, run: dict[str, Any]) -> None:
    history.parent.mkdir(parents=True, exist_ok=True)
    with history.open("a", encoding="utf-8") as f:
        for c in run["configs"]:
            f.write(json.dumps({"timestamp": run["timestamp"], "run_key": run["run_key"],
                                "dataset": run["dataset"]["name"], "config": c["name"], "n": run["n"],
                                "metrics": c["metrics"], "report": run["report"]}, ensure_ascii=False) + "\n")


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3f}"
    return escape(str(v))


def _delta(metric: str, now: float | None, before: float | None) -> str:
    if now is None or before is None:
        return ""
    d = now - before
    if abs(d) < 1e-9:
        return '<span class="same">±0</span>'
    better = (d < 0) if metric.startswith(LOWER_IS_BETTER) else (d > 0)
    return f'<span class="{"up" if better else "down"}">{d:+.3f}</span>' if abs(d) < 10 else \
        f'<span class="{"up" if better else "down"}">{d:+,.0f}</span>'


def metric_names(run: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for c in run["configs"]:
        names += [m for m in c["metrics"] if m not in names]
    return names


def calibration_line(cal: dict[str, Any] | None) -> str:
    if not cal:
        return "Judge not used in this run (--no-judge)."
    if cal.get("error"):
        return f"Judge NOT calibrated: {cal['error']}. Treat its scores with caution."
    f, c = cal["faithfulness"], cal["context_relevance"]
    return (f"Judge {cal['judge']} ({cal['rubric']}) agrees with the references on {cal['set']} "
            f"({cal['cases']} labelled cases from {cal['questions']} questions): faithfulness "
            f"{_pct(f['agreement'])} (Cohen's kappa {f['kappa']}), context relevance {_pct(c['agreement'])} "
            f"(kappa {c['kappa']}); {cal.get('unparsed', 0)} replies unparsed"
            + (f", {cal['failed']} cases failed." if cal.get("failed") else "."))


def failures_line(run: dict[str, Any]) -> str:
    """How many questions failed (an error, not a wrong answer), per config; empty when none did."""
    counts = [(c["name"], c.get("failed", 0)) for c in run["configs"]]
    if not any(n for _, n in counts):
        return ""
    per = ", ".join(f"{name}: {n}" for name, n in counts if n) if len(counts) > 1 else ""
    total = sum(n for _, n in counts)
    asked = run["n"] * len(counts)
    return (f"{total} of {asked} questions failed{f' ({per})' if per else ''}: they are listed with their error "
            f"and left out of the metrics.")


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.0f}%"


def write_markdown(run: dict[str, Any], path: Path) -> None:
    names = [c["name"] for c in run["configs"]]
    lines = [f"# Evaluation: {run['dataset']['name']} ({run['n']} questions)", "",
             f"{run['timestamp']} · `{run['command']}`", "", calibration_line(run.get("calibration")), "",
             *([f"**{failures_line(run)}**", ""] if failures_line(run) else []),
             "| metric | " + " | ".join(names) + " | previous |", "|---|" + "---|" * (len(names) + 1)]
    for m in metric_names(run):
        prev = run.get("previous", {}).get(names[0], {}).get("metrics", {}).get(m)
        cells = [_fmt(c["metrics"].get(m)) for c in run["configs"]]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {_fmt(prev)} |")
    lines += ["", f"Report: {run['report']}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#111827;max-width:1400px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #e5e7eb;padding:4px 8px;vertical-align:top;
text-align:left}th{background:#f3f4f6}.num{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#15803d}.down{color:#b91c1c}.same{color:#6b7280}.calib{padding:10px 14px;border-left:4px solid #2563eb;
background:#eff6ff}.calib.warn{border-color:#b91c1c;background:#fef2f2}
#rows td{font-size:12.5px;max-width:420px}.fail{background:#fff7f7}.rel{color:#15803d;font-weight:bold}
.reason{color:#374151;font-style:italic}.muted{color:#6b7280}.controls{margin:8px 0;display:flex;gap:14px}
svg.plot{display:block;margin:8px 0;max-width:100%;height:auto}
"""

JS = """
function applyFilter(){
  const only=document.getElementById('failures').checked;
  const cfg=document.getElementById('config').value;
  const q=document.getElementById('search').value.toLowerCase();
  let shown=0;
  for(const tr of document.querySelectorAll('#rows tbody tr')){
    const ok=(!only||tr.dataset.fail==='1')&&(!cfg||tr.dataset.config===cfg)
      &&(!q||tr.textContent.toLowerCase().includes(q));
    tr.style.display=ok?'':'none'; if(ok) shown++;
  }
  document.getElementById('shown').textContent=shown;
}
"""


def _row_html(r: dict[str, Any]) -> str:
    retrieved = "<br>".join(
        f'<span class="{"rel" if h["relevant"] else ""}">{escape(h.get("label") or h["source"])}</span> '
        f'<span class="muted">{h["score"]:.3f}</span>'
        for h in r.get("retrieved", []))
    answer = ""
    if failed(r):
        answer = (f'<b class="down">failed while {escape(r.get("failed_stage", "?"))}</b>: '
                  f'{escape(r["error"][:600])}<br>')
    if "answer" in r:
        answer += ("<b>refused</b>: " if r["refused"] else "") + escape(r["answer"][:1200])
        if r.get("cited"):
            answer += '<br><span class="muted">cited: ' + ", ".join(
                escape(c.get("label") or c["source"]) for c in r["cited"]) + "</span>"
    refs = "unanswerable" if r["impossible"] else " | ".join(escape(a) for a in r["answers"][:3])
    if r.get("evidence_pages"):
        refs += '<br><span class="muted">evidence: ' + ", ".join(f"{escape(d)} p.{p}" for d, p in
                                                                r["evidence_pages"]) + "</span>"
    scores = {**{f"ret.{k}": v for k, v in r.get("retrieval", {}).items()}, **r.get("scores", {}),
              **{f"cite.{k}": v for k, v in r.get("citation", {}).items()}}
    j = r.get("judge") or {}
    scores.update({k: j[k] for k in ("faithfulness", "answer_relevance", "context_relevance") if j.get(k) is not None})
    if r.get("noise"):
        scores["noise.f1"] = r["noise"]["f1"]
    score_html = "<br>".join(f"{escape(k)}: {v:.2f}" for k, v in scores.items() if v is not None)
    t = r.get("timings", {})
    timing = " / ".join(_fmt(t.get(x)) for x in ("retrieval_ms", "ttft_ms", "total_ms") if x in t)
    fail = is_failure(r)
    return (f'<tr data-fail="{int(fail)}" data-config="{escape(r["config"])}" class="{"fail" if fail else ""}">'
            f'<td>{escape(r["config"])}</td><td>{escape(r["question"])}</td><td>{refs}</td><td>{retrieved}</td>'
            f'<td>{answer}</td><td class="num">{score_html}</td>'
            f'<td class="reason">{escape(j.get("reason", ""))}</td><td class="num">{timing}</td></tr>')


def write_html(run: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> None:
    names = [c["name"] for c in run["configs"]]
    metrics = metric_names(run)
    prev = run.get("previous", {})
    head = "".join(f"<th>{escape(n)}</th>" for n in names)
    if prev:
        head += "<th>previous run</th>"
    body = []
    for m in metrics:
        cells = "".join(f'<td class="num">{_fmt(c["metrics"].get(m))} '
                        f'{_delta(m, c["metrics"].get(m), prev.get(c["name"], {}).get("metrics", {}).get(m))}</td>'
                        for c in run["configs"])
        if prev:
            p = prev.get(names[0], {})
            cells += f'<td class="num muted">{_fmt(p.get("metrics", {}).get(m))}</td>'
        body.append(f"<tr><td title=\"{escape(definition(m))}\">{escape(m)}</td>{cells}</tr>")
    quality = [m for m in metrics if m.startswith(QUALITY_PREFIXES) and not m.endswith("_drop")]
    chart = bar_chart(quality, {c["name"]: c["metrics"] for c in run["configs"]},
                      title="Quality metrics per configuration (0-1)")
    lat_groups: dict[str, list[float]] = {}
    for r in rows:
        for key, label in (("retrieval_ms", "retrieval"), ("ttft_ms", "first token"), ("total_ms", "total")):
            v = r.get("timings", {}).get(key)
            if v is not None:
                lat_groups.setdefault(f"{r['config']}: {label}", []).append(v)
    latency = box_plot(lat_groups, title="Latency per question (ms)")
    cal = run.get("calibration")
    cal_class = "calib warn" if not cal or cal.get("error") else "calib"
    defs = "".join(f"<tr><td>{escape(m)}</td><td>{escape(definition(m))}</td></tr>" for m in metrics if definition(m))
    settings = "".join(f"<tr><td>{escape(c['name'])}</td><td>{escape(c.get('file') or '(current settings)')}</td>"
                       f"<td>{escape(json.dumps(c['settings']))}</td><td>{_fmt(c['wall_s'])} s</td></tr>"
                       for c in run["configs"])
    options = "".join(f'<option value="{escape(n)}">{escape(n)}</option>' for n in names)
    n_fail = sum(is_failure(r) for r in rows)
    html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Consulta evaluation: {escape(run['dataset']['name'])}</title><style>{CSS}</style></head><body>
<h1>Evaluation: {escape(run['dataset']['name'])} <span class="muted">({run['n']} questions, \
{escape(run['dataset']['format'])})</span></h1>
<p class="muted">{escape(run['timestamp'])} · <code>{escape(run['command'])}</code></p>
<p class="{cal_class}" id="calibration">{escape(calibration_line(cal))}</p>
{f'<p class="calib warn" id="failed">{escape(failures_line(run))}</p>' if failures_line(run) else ''}
<h2>Metrics</h2><table id="metrics"><thead><tr><th>metric</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>
<p class="muted">Deltas compare with the previous run on the same questions
{('(' + escape(prev[names[0]]['timestamp']) + ')') if prev.get(names[0]) else '(none yet)'}; hover a metric for its
definition.</p>
<h2>Plots</h2>{chart}{latency}
<h2>Configurations</h2><table><tr><th>name</th><th>file</th><th>settings</th><th>wall</th></tr>{settings}</table>
<h2>Questions</h2>
<div class="controls"><label><input type="checkbox" id="failures" onchange="applyFilter()"> failures only \
({n_fail})</label><label>config <select id="config" onchange="applyFilter()"><option value="">all</option>\
{options}</select></label><label>search <input id="search" oninput="applyFilter()"></label>
<span><span id="shown">{len(rows)}</span> shown</span></div>
<table id="rows"><thead><tr><th>config</th><th>question</th><th>reference</th><th>retrieved (relevant in green)</th>
<th>answer</th><th>scores</th><th>judge's reason</th><th>retrieval / first token / total ms</th></tr></thead>
<tbody>{''.join(_row_html(r) for r in rows)}</tbody></table>
<h2>Definitions</h2><table>{defs}</table>
<script>{JS}</script></body></html>"""
    path.write_text(html, encoding="utf-8")


def write_reports(run: dict[str, Any], rows: list[dict[str, Any]], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    html = folder / "report.html"
    run["report"] = str(html)
    with (folder / "rows.jsonl").open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({k: v for k, v in r.items() if k != "context"}, ensure_ascii=False) + "\n")
    (folder / "summary.json").write_text(json.dumps(run, ensure_ascii=False, indent=1), encoding="utf-8")
    write_markdown(run, folder / "summary.md")
    write_html(run, rows, html)
    return html
