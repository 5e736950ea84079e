"""The Streamlit UI end to end: headless Chromium -> Streamlit -> the real API over HTTP.

Each test saves a screenshot of the page it checked in test-artifacts/.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path, PurePath

import pytest
from playwright.sync_api import expect

from ui.client import ApiClient, SourcesEvent

pytestmark = pytest.mark.browser

QUESTION = "How soon are travel expenses reimbursed?"
COLLECTION = "demo"
ANSWER_TIMEOUT_MS = 300_000  # a real model on two CPU cores
INGEST_TIMEOUT_MS = 300_000
CURSOR = "▌"


def open_ui(page, url: str) -> None:
    page.goto(url)
    page.locator(".st-key-api-status").wait_for()


def combobox(page, label: str):
    return page.get_by_role("combobox", name=label, exact=True)


def pick(page, label: str, option: str | re.Pattern) -> None:
    """Choose `option` in the selectbox labelled `label`."""
    combobox(page, label).click()
    page.get_by_role("option", name=option).click()


def wait_idle(page) -> None:
    """Wait until the script run a click started has finished."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=60_000)


def text_of(page, selector: str) -> str:
    return " ".join(page.locator(selector).inner_text().split())


def test_page_shows_api_status_and_collection_picker(page, ui_server, api_server, artifacts: Path):
    health = ApiClient(api_server).health()
    open_ui(page, ui_server)

    status = page.locator(".st-key-api-status")
    expect(status).to_contain_text("Connected")
    expect(status).to_contain_text(f"{health.index_chunks:,} passage")
    if health.model:
        expect(status).to_contain_text(health.model)

    picker = combobox(page, "Collection")
    expect(picker).to_have_value("All collections")
    picker.click()
    options = page.get_by_role("option").all_inner_texts()
    assert options[0] == "All collections"
    assert any(o.startswith(f"{COLLECTION} · ") for o in options), options
    page.keyboard.press("Escape")

    expect(page.get_by_text("Ask your documents")).to_be_visible()
    expect(page.locator('[data-testid="stChatInput"] textarea')).to_have_attribute("placeholder", "Ask a question…")
    page.screenshot(path=artifacts / "ui-home.png", full_page=True)


def test_language_switch_relabels_the_page(page, ui_server, artifacts: Path):
    open_ui(page, ui_server)
    pick(page, "Language", "Català")
    expect(page.get_by_text("Pregunta als teus documents")).to_be_visible()
    expect(page.locator(".st-key-api-status")).to_contain_text("Connectat")
    expect(combobox(page, "Col·lecció")).to_have_value("Totes les col·leccions")
    expect(page.locator('[data-testid="stChatInput"] textarea')).to_have_attribute(
        "placeholder", "Escriu una pregunta…"
    )
    page.screenshot(path=artifacts / "ui-home-ca.png", full_page=True)

    pick(page, "Idioma", "Español")
    expect(page.get_by_text("Pregunta a tus documentos")).to_be_visible()
    expect(page.get_by_role("link", name="Documentos")).to_be_visible()


def test_question_streams_an_answer_with_citation_chips(page, ui_server, api_server, artifacts: Path):
    open_ui(page, ui_server)
    pick(page, "Collection", re.compile(rf"^{COLLECTION} · "))
    expect(page.get_by_text(f"Searching the collection {COLLECTION}.")).to_be_visible()

    # Record what the answer bubble shows while it streams, every 20 ms.
    page.evaluate(
        """() => { window.__frames = [];
             setInterval(() => { const el = document.querySelector('.st-key-answer-0');
                                 if (el) window.__frames.push(el.innerText); }, 20); }"""
    )
    page.locator('[data-testid="stChatInput"] textarea').fill(QUESTION)
    page.keyboard.press("Enter")
    page.locator(".st-key-timings-0").wait_for(timeout=ANSWER_TIMEOUT_MS)
    wait_idle(page)

    frames = [f for f in page.evaluate("window.__frames") if f.strip()]
    streaming = {f for f in frames if CURSOR in f}
    assert len(streaming) >= 2, f"the answer did not arrive token by token: {frames[:5]}"
    answer = page.locator(".st-key-answer-0 [data-testid='stMarkdownContainer']").first.inner_text().strip()
    assert answer and CURSOR not in answer
    assert "total" in text_of(page, ".st-key-timings-0")

    # The chips name the passages the API numbered for this question: same file, same page.
    sources = _numbered_sources(api_server, QUESTION, COLLECTION)
    chips = page.locator(".st-key-citations-0 [data-testid='stPopover'] button")
    labels = [" ".join(t.split()) for t in chips.all_inner_texts()]
    assert labels, "no citation chip under the answer"
    for label in labels:
        n = int(re.match(r"\[(\d+)\]", label).group(1))
        source = sources[n]
        expected = f"[{n}] {PurePath(source.source).name}" + (f" · p. {source.page}" if source.page else "")
        assert label.startswith(expected), (label, expected)

    chips.first.click()
    popover = page.locator('[data-testid="stPopoverBody"]')
    popover.wait_for()
    first = sources[int(re.match(r"\[(\d+)\]", labels[0]).group(1))]
    body = " ".join(popover.inner_text().split())
    assert f"Source: {first.source}" in body
    if first.page is not None:
        assert f"Page {first.page}" in body
    assert " ".join(first.text.split())[:60] in body
    page.screenshot(path=artifacts / "ui-chat-answer.png", full_page=True)


def test_documents_page_uploads_files_and_lists_them(page, ui_server, tmp_path: Path, artifacts: Path):
    collection = "ui-upload"
    note = tmp_path / f"onboarding-{uuid.uuid4().hex[:8]}.md"
    note.write_text(
        "# Onboarding checklist\n\nNew staff collect their badge from reception on the first day "
        "and complete the security course within two weeks.\n"
    )
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"this is not a PDF at all")

    page.goto(f"{ui_server}/documents")
    page.locator(".st-key-upload").wait_for()
    target = combobox(page, "Into collection")
    target.click()
    target.fill(collection)
    page.keyboard.press("Enter")
    expect(target).to_have_value(collection)

    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([note, broken])
    page.get_by_role("button", name="Ingest 2 files").click()

    result = page.locator(".st-key-upload-result")
    result.wait_for(timeout=INGEST_TIMEOUT_MS)
    lines = result.inner_text().splitlines()
    assert any(note.name in line and "Ingested" in line for line in lines), lines
    assert any(broken.name in line and "Failed" in line for line in lines), lines
    expect(result).to_contain_text(f"added to {collection}")

    listing = page.locator(".st-key-documents")
    expect(listing).to_contain_text(note.name)
    expect(listing).to_contain_text(collection)
    page.screenshot(path=artifacts / "ui-documents.png", full_page=True)


def test_api_down_shows_how_to_start_it(page, ui_server_without_api, artifacts: Path):
    url, dead_api = ui_server_without_api
    open_ui(page, url)
    message = page.locator(".st-key-api-unreachable")
    expect(message).to_contain_text("API unreachable")
    expect(message).to_contain_text(dead_api)
    expect(message).to_contain_text("consulta serve")
    expect(page.locator(".st-key-api-status")).to_contain_text("API unreachable")
    expect(page.locator('[data-testid="stChatInput"]')).to_have_count(0)
    page.screenshot(path=artifacts / "ui-api-down.png", full_page=True)

    page.goto(f"{url}/documents")
    expect(page.locator(".st-key-api-unreachable")).to_contain_text(dead_api)


def _numbered_sources(api_url: str, question: str, collection: str) -> dict:
    """The passages the API numbers for `question` (its `sources` event), by number."""
    sources = {}
    for event in ApiClient(api_url).ask_stream(question, collection=collection):
        if isinstance(event, SourcesEvent):
            sources = {c.n: c for c in event.citations}
    return sources
