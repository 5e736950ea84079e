"""The Streamlit UI end to end: headless Chromium -> Streamlit -> a real `consulta serve` over HTTP.

Each test signs in the way staff do and saves a screenshot of the page it checked in test-artifacts/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import ADMIN_PASSWORD, ADMIN_USER, make_pdf

pytestmark = pytest.mark.browser

ANSWER_TIMEOUT_MS = 300_000  # a real model on two busy CPU cores
INGEST_TIMEOUT_MS = 300_000
CURSOR = "▌"
UPLOAD_COLLECTION = "ui-upload"
# A PDF whose pages say different things, so a citation's page can be checked against its passage.
PARKING_PAGES = [
    "Facilities guide. Chapter 1: Meeting rooms. Rooms on the second floor are booked through the intranet "
    "calendar; cancel a booking you no longer need.",
    "Chapter 2: Library. Books may be borrowed for three weeks and renewed once at the front desk.",
    "Chapter 3: Parking. A staff parking permit costs 12 euros per month and is requested from the "
    "facilities office with a copy of the vehicle registration.",
]
QUESTION = "How much does a staff parking permit cost per month?"


def sign_in(page, url: str, username: str = ADMIN_USER, password: str = ADMIN_PASSWORD) -> None:
    page.goto(url)
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.locator(".st-key-account").wait_for()
    wait_idle(page)


def go(page, name: str) -> None:
    """Follow a link of the sidebar's navigation (a reload would start a new, signed-out session)."""
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text=re.compile(rf"{name}\s*$")).click()
    wait_idle(page)


def combobox(page, label: str):
    return page.get_by_role("combobox", name=label, exact=True)


def pick(page, label: str, option: str | re.Pattern) -> None:
    """Choose `option` in the selectbox labelled `label`."""
    combobox(page, label).click()
    page.get_by_role("option", name=option).click()
    wait_idle(page)


def options_of(page, label: str) -> list[str]:
    combobox(page, label).click()
    options = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    return options


def wait_idle(page) -> None:
    """Wait until the script run a click started has finished."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=60_000)


def test_sign_in_refuses_a_wrong_password_and_speaks_three_languages(page, ui_server, artifacts: Path):
    page.goto(ui_server)
    expect(page.get_by_role("heading", name="Sign in to Consulta")).to_be_visible()
    expect(page.locator('[data-testid="stSidebarNav"]')).to_have_count(0)  # nothing to see before signing in
    page.get_by_label("User name").fill(ADMIN_USER)
    page.get_by_label("Password", exact=True).fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".st-key-login-error")).to_contain_text("Wrong user name or password")
    page.screenshot(path=artifacts / "ui-login-error.png", full_page=True)

    pick(page, "Language", "Català")
    expect(page.get_by_role("heading", name="Entra a Consulta")).to_be_visible()
    expect(page.locator(".st-key-api-status")).to_contain_text("Connectat")
    pick(page, "Idioma", "Español")
    expect(page.get_by_role("heading", name="Entra en Consulta")).to_be_visible()
    page.get_by_label("Usuario").fill(ADMIN_USER)
    page.get_by_label("Contraseña", exact=True).fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Entrar").click()
    expect(page.get_by_role("heading", name="Pregunta a tus documentos")).to_be_visible()
    expect(page.locator('[data-testid="stSidebarNav"]')).to_contain_text("Administración")
    page.screenshot(path=artifacts / "ui-home-es.png", full_page=True)

    page.get_by_role("button", name="Salir").click()
    expect(page.get_by_text("Has cerrado la sesión.")).to_be_visible()
    expect(page.locator('[data-testid="stSidebarNav"]')).to_have_count(0)


def test_upload_a_pdf_then_ask_and_open_the_cited_page(page, ui_server, api_server, tmp_path: Path, artifacts: Path):
    pdf = make_pdf(tmp_path / "facilities-guide.pdf", PARKING_PAGES, title="Facilities guide")
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"this is not a PDF at all")
    sign_in(page, ui_server)

    # Documents: drop two files into a new collection; follow the ingestion job to its end.
    go(page, "Documents")
    target = combobox(page, "Into collection")
    target.click()
    target.fill(UPLOAD_COLLECTION)
    page.keyboard.press("Enter")
    expect(target).to_have_value(UPLOAD_COLLECTION)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([pdf, broken])
    # Streamlit re-renders the page after the files arrive; on a loaded 2-core machine that took over 30 s once
    page.get_by_role("button", name="Ingest 2 files").click(timeout=120_000)
    result = page.locator(".st-key-upload-result")
    expect(result).to_contain_text(f"added to {UPLOAD_COLLECTION}", timeout=INGEST_TIMEOUT_MS)
    lines = result.inner_text().splitlines()
    assert any(pdf.name in line and "Ingested" in line and "3 pages" in line for line in lines), lines
    assert any(broken.name in line and "Failed" in line for line in lines), lines
    expect(page.locator(".st-key-documents")).to_contain_text(pdf.name)
    page.screenshot(path=artifacts / "ui-documents.png", full_page=True)

    # Ask in that collection: the bubble says it is searching while the answer is drafted and checked
    # (app/grounding.py), then shows the checked answer; a chip names the file and the page it cites.
    go(page, "Ask")
    pick(page, "Collection", re.compile(rf"^{UPLOAD_COLLECTION} · "))
    expect(page.get_by_text(f"Searching the collection {UPLOAD_COLLECTION}.")).to_be_visible()
    page.evaluate(  # what the answer bubble shows while it streams, every 20 ms
        """() => { window.__frames = [];
             setInterval(() => { const el = document.querySelector('.st-key-answer-0');
                                 if (el) window.__frames.push(el.innerText); }, 20); }"""
    )
    page.locator('[data-testid="stChatInput"] textarea').fill(QUESTION)
    page.keyboard.press("Enter")
    page.locator(".st-key-meta-0").wait_for(timeout=ANSWER_TIMEOUT_MS)
    wait_idle(page)
    frames = [f for f in page.evaluate("window.__frames") if f.strip()]
    assert frames and frames[0].startswith("Searching"), frames[:3]
    assert any(not f.startswith("Searching") for f in frames), f"no answer was shown: {frames[-3:]}"
    assert CURSOR not in page.locator(".st-key-answer-0").inner_text()
    expect(page.locator(".st-key-timings-0")).to_contain_text("first token")

    chips = page.locator(".st-key-citations-0 [data-testid='stPopover'] button")
    labels = [" ".join(t.split()) for t in chips.all_inner_texts()]
    assert labels and all(re.match(rf"\[\d+\] {re.escape(pdf.name)} · p\. \d\b", x) for x in labels), labels
    for i, label in enumerate(labels):  # every chip's page holds the passage it quotes
        chips.nth(i).click()
        body = page.locator('[data-testid="stPopoverBody"]').filter(has_text="Source:")
        body.wait_for()
        text = " ".join(body.inner_text().split())
        n = int(re.search(r"p\. (\d+)", label).group(1))
        assert f"Page {n}" in text and f"Source: {pdf.name}" in text, text
        quote = " ".join(body.locator("blockquote").first.inner_text().split())
        assert quote[:40] in " ".join(PARKING_PAGES[n - 1].split()), (n, quote)
        if i == 0:
            page.screenshot(path=artifacts / "ui-chat-citation.png", full_page=True)
            href = body.get_by_role("link", name=f"Open at page {n}").get_attribute("href")
            assert href.endswith(f"#page={n}"), href
            served = httpx.get(href.split("#")[0], timeout=30)  # the signed link opens without a header
            assert served.status_code == 200 and served.content.startswith(b"%PDF"), served.status_code
        page.keyboard.press("Escape")
        wait_idle(page)

    # Feedback, then the conversation kept on the server: it is listed, renamed, deleted.
    page.locator(".st-key-feedback-0 button").first.click()  # thumbs up
    expect(page.locator(".st-key-feedback-0")).to_contain_text("Marked helpful")
    conversations = page.locator(".st-key-conversations")
    expect(conversations).to_contain_text(QUESTION[:30])
    page.get_by_role("button", name="Rename or delete").click()
    page.get_by_label("Title").fill("Parking permits")
    page.get_by_role("button", name="Rename", exact=True).click()
    expect(conversations).to_contain_text("Parking permits")
    page.screenshot(path=artifacts / "ui-chat-answer.png", full_page=True)
    delete = page.get_by_role("button", name="Delete conversation")
    if not delete.is_visible():  # the menu may still be open after the rename
        page.get_by_role("button", name="Rename or delete").click()
    delete.click()
    expect(conversations).not_to_contain_text("Parking permits")
    expect(page.locator(".st-key-chat-empty")).to_be_visible()

    # Documents again: delete the PDF; it leaves the listing (and the index).
    go(page, "Documents")
    row = page.locator('[class*="st-key-doc-"]').filter(has_text=pdf.name)
    expect(row).to_have_count(1)
    key = next(c for c in row.get_attribute("class").split() if c.startswith("st-key-doc-"))
    page.locator(f".st-key-delete-{key.removeprefix('st-key-doc-')} button").first.click()
    page.get_by_role("button", name="Delete", exact=True).click()
    expect(page.locator(".st-key-documents")).not_to_contain_text(pdf.name)
    expect(page.locator(".st-key-documents")).to_contain_text("handbook.pdf")


def test_reader_sees_only_the_collections_granted(page, ui_server, reader, artifacts: Path):
    sign_in(page, ui_server, reader.username, reader.password)
    expect(page.locator(".st-key-account")).to_contain_text(f"{reader.username} · reader")
    nav = " ".join(page.locator('[data-testid="stSidebarNav"]').all_inner_texts())  # no menu for one page
    assert not any(hidden in nav for hidden in ("Documents", "Admin", "Evaluation")), nav
    expect(page.get_by_role("heading", name="Ask your documents")).to_be_visible()
    options = options_of(page, "Collection")
    assert any(o.startswith("demo · ") for o in options), options
    assert not any(o.startswith((f"{reader.unreadable} · ", f"{UPLOAD_COLLECTION} · ")) for o in options), options
    page.screenshot(path=artifacts / "ui-reader.png", full_page=True)


def test_admin_page_shows_users_grants_audit_and_engine_health(page, ui_server, reader, artifacts: Path):
    sign_in(page, ui_server)
    go(page, "Admin")
    expect(page.locator(".st-key-engine-health")).to_contain_text("Queue")
    expect(page.locator(".st-key-engine-health")).to_contain_text("Time to first token")
    page.screenshot(path=artifacts / "ui-admin-engine.png", full_page=True)

    page.get_by_role("tab", name="Users").click()
    users = page.locator(".st-key-users")
    expect(users).to_contain_text(reader.username)
    expect(users).to_contain_text(ADMIN_USER)

    page.get_by_role("tab", name="Access").click()
    grants = page.locator(".st-key-grants")
    expect(grants).to_contain_text(reader.username)
    expect(grants).to_contain_text("demo")

    page.get_by_role("tab", name="Audit log").click()
    audit = page.locator(".st-key-audit")
    expect(audit).to_contain_text("login")
    expect(audit).to_contain_text("grant.add")
    page.screenshot(path=artifacts / "ui-admin-audit.png", full_page=True)


def test_evaluation_page_shows_the_latest_report(page, ui_server, api_env, artifacts: Path):
    folder = Path(api_env["CONSULTA_DATA_DIR"]) / "reports" / "20261123T101500Z"
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"timestamp": folder.name, "n": 12, "dataset": {"name": "squad2-en-half"},
               "command": "consulta eval run --dataset squad2-en-half",
               "configs": [{"name": "default", "metrics": {"answer.f1": 0.61, "refusal.false_rate": 0.08}}]}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "report.html").write_text("<html><body><h1>Consulta evaluation</h1><p>F1 plot here</p></body></html>")

    sign_in(page, ui_server)
    go(page, "Evaluation")
    expect(combobox(page, "Report")).to_have_value("2026-11-23 10:15 UTC · squad2-en-half · 12 questions")
    expect(page.locator(".st-key-eval-summary")).to_contain_text("0.610")
    frame = page.frame_locator(".st-key-eval-report-frame iframe")
    expect(frame.get_by_text("F1 plot here")).to_be_visible()
    page.screenshot(path=artifacts / "ui-evaluation.png", full_page=True)


def test_api_down_shows_how_to_start_it(page, ui_server_without_api, artifacts: Path):
    url, dead_api = ui_server_without_api
    page.goto(url)
    message = page.locator(".st-key-api-unreachable")
    expect(message).to_contain_text("API unreachable")
    expect(message).to_contain_text(dead_api)
    expect(message).to_contain_text("consulta serve")
    expect(page.locator(".st-key-api-status")).to_contain_text("API unreachable")
    expect(page.get_by_label("User name")).to_have_count(0)
    page.screenshot(path=artifacts / "ui-api-down.png", full_page=True)
