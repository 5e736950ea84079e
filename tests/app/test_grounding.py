"""The checks a drafted answer passes before a user sees it (no model needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.grounding import (
    compose,
    grounding,
    is_bare,
    language_of,
    only_citations,
    says_it_does_not_know,
    with_what_follows,
)

PASSAGE = ("Travel expenses are reimbursed within 30 days after the receipts are uploaded to the finance portal "
           "at https://finance.example.org. Contact travel@example.org for help.")


@pytest.mark.parametrize("draft", [
    "I don't know.", "The sources do not mention the CEO's name.", "NO_ANSWER",
    "No lo sé.", "Las fuentes no mencionan el nombre del director.", "No hay información sobre eso.",
    "No ho sé.", "Les fonts no esmenten el nom del director.", "No hi ha informació sobre això.",
])
def test_the_model_saying_it_does_not_know_is_recognised_in_three_languages(draft):
    assert says_it_does_not_know(draft)


@pytest.mark.parametrize("draft", [
    "Travel expenses are reimbursed within 30 days [1].", "Se reembolsan en 30 días [1].",
    "Es reemborsen en 30 dies [1].", "The knowledge of the staff is not tested here [2].",
])
def test_an_answer_is_not_taken_for_a_refusal(draft):
    assert not says_it_does_not_know(draft)


def test_a_draft_of_only_citation_markers_is_caught():
    assert only_citations("[3]") and only_citations(" [1] [2]. ")
    assert not only_citations("30 days [1]")


@pytest.mark.parametrize("text,language", [
    ("Los gastos de viaje se reembolsan en un plazo de 30 días desde que se suben los recibos.", "es"),
    ("Les despeses de viatge es reemborsen en un termini de 30 dies després de pujar els rebuts.", "ca"),
    ("Travel expenses are reimbursed within 30 days after the receipts are uploaded.", "en"),
])
def test_the_language_of_a_draft(text, language):
    assert language_of(text) == language


def test_too_little_text_has_no_language():
    assert language_of("dpkg-reconfigure locales [2]") is None


def test_a_draft_that_names_what_no_passage_holds_is_not_grounded():
    g = grounding("Expenses are reimbursed within 45 days [1].", "How long does reimbursement take?", [PASSAGE],
                  "en")
    assert g.unsupported == ("45",) and not g.grounded
    made_up = grounding("Write to finance-help@example.org [1].", "Whom do I write to?", [PASSAGE], "en")
    assert made_up.unsupported and not made_up.grounded


def test_a_draft_copied_from_a_passage_is_grounded():
    g = grounding("They are reimbursed within 30 days after the receipts are uploaded [1].",
                  "How long does reimbursement take?", [PASSAGE], "en")
    assert g.grounded and g.unsupported == ()
    assert grounding("Write to travel@example.org [1].", "Whom do I write to?", [PASSAGE], "en").grounded


def test_a_number_the_passage_writes_in_words_is_held():
    passage = "El personal puede teletrabajar dos días por semana con la aprobación de su responsable."
    text, why = compose("2 días por semana [1]", "¿Cuántos días por semana se puede teletrabajar?",
                        [SimpleNamespace(n=1, text=passage)], "es")
    assert text is not None and text.startswith("2 días por semana [1]"), why
    assert "La fuente dice: «El personal puede teletrabajar dos días por semana" in text
    made_up, why = compose("3 días por semana [1]", "¿Cuántos días por semana se puede teletrabajar?",
                           [SimpleNamespace(n=1, text=passage)], "es")
    assert made_up is None and "3" in why


def test_a_short_answer_is_shown_with_its_supporting_sentence_and_a_bare_citation_becomes_one():
    sources = [SimpleNamespace(n=1, text="Contact the desk. " + PASSAGE), SimpleNamespace(n=2, text="Unrelated.")]
    text, _ = compose("30 days [1]", "How long does reimbursement take?", sources, "en")
    assert text == ("30 days [1]\n\nThe source says: «Travel expenses are reimbursed within 30 days after the receipts "
                    "are uploaded to the finance portal at https://finance.example.org.»")
    bare, why = compose("[1]", "How long does the reimbursement of travel expenses take?", sources, "en")
    assert bare.startswith("The source says: «Travel expenses are reimbursed within 30 days") and bare.endswith("[1]")
    refused, why = compose("I don't know.", "Who is the CEO?", sources, "en")
    assert refused is None and "do not answer" in why


def test_a_lone_source_number_is_a_citation_unless_a_number_is_asked():
    sources = [SimpleNamespace(n=1, text="The movement began in the mid-18th century within the Church of England. "
                               "It had 1 founder."),
               SimpleNamespace(n=2, text="Unrelated text about 2 things.")]
    text, why = compose("1 [1]", "When did the movement begin?", sources, "en")
    assert text.startswith("The source says: «The movement began in the mid-18th century") and text.endswith("[1]")
    counted, _ = compose("1 [1]", "How many founders did it have?", sources, "en")
    assert counted.startswith("1 [1]")
    assert is_bare("[2]", "What?", sources) and is_bare("1 [1]", "When did the movement begin?", sources)
    assert not is_bare("1 [1]", "How many founders did it have?", sources)
    assert not is_bare("the mid-18th century [1]", "When?", sources) and not is_bare("", "When?", sources)


def test_a_short_answer_names_a_command_without_its_manual_section():
    sources = [SimpleNamespace(n=1, text="Utiliza w3m(1) para conversiones desde ficheros HTML a texto plano.")]
    text, _ = compose("w3m(1) [1]", "¿Qué herramienta pasa HTML a texto plano?", sources, "es")
    assert text.startswith("w3m [1]\n\n") and "«Utiliza w3m(1) para conversiones" in text


@pytest.mark.parametrize("draft,question,language", [
    ("#debian-mentors [1]", "A quina xarxa o servidor d'IRC es troba el canal #debian-mentors?", "ca"),
    ("Con schroot se prepara el entorno chroot de sbuild.", "¿Cómo se prepara con schroot el entorno chroot de sbuild?",
     "es"),
    ("The finance portal [1]", "Who runs the finance portal?", "en"),
])
def test_a_draft_that_only_repeats_the_question_is_not_shown(draft, question, language):
    sources = [SimpleNamespace(n=1, text=f"{question} {PASSAGE}")]
    text, why = compose(draft, question, sources, language)
    assert text is None and "repeats the question" in why


def test_an_answer_picked_from_the_choices_a_question_offers_is_shown():
    question = "Which is longer by default: the package name or the version?"
    sources = [SimpleNamespace(n=1, text="By default the package name is 30 characters long and the version 11.")]
    text, _ = compose("the package name [1]", question, sources, "en")
    assert text is not None and text.startswith("the package name [1]")


def test_an_address_given_for_someone_it_is_not_said_of_is_not_shown():
    sources = [SimpleNamespace(n=1, text="This guide was written by Josip Rodin and Osamu Aoki."),
               SimpleNamespace(n=2, text="Licence questions go to the debian-legal@lists.debian.org mailing list.")]
    text, why = compose("debian-legal@lists.debian.org [2]", "What is Osamu Aoki's e-mail address?", sources, "en")
    assert text is None and "debian-legal@lists.debian.org" in why
    text, _ = compose("travel@example.org [1]", "Which e-mail address helps with travel expenses?",
                      [SimpleNamespace(n=1, text=PASSAGE)], "en")
    assert text is not None and "travel@example.org" in text


def test_a_long_supporting_sentence_is_cut_around_the_answer_and_a_footnote_ends_a_sentence():
    long = "Programs that use this build system " + "really " * 60 + "ship a CMakeLists.txt file in their source."
    text, _ = compose("CMakeLists.txt [1]", "Which file shows a program builds with CMake?",
                      [SimpleNamespace(n=1, text=long + " ⁸Many modern programs come with a configure script.")],
                      "en")
    quoted = text.split("«", 1)[1] if "«" in text else text.split('"', 1)[1]
    assert "CMakeLists.txt" in quoted and "Many modern" not in quoted and len(quoted.split()) <= 45


def test_a_bare_citation_shows_the_sentence_closest_in_meaning_when_the_verifier_found_it():
    source = SimpleNamespace(n=1, text=PASSAGE, best="Contact travel@example.org for help.")
    text, why = compose("[1]", "Who can help me with travel?", [source], "en")
    assert "Contact travel@example.org for help." in text and text.endswith("[1]") and why == "only citations"


def test_a_sentence_ending_in_a_colon_is_quoted_with_what_follows():
    text = "Instala el paquete. Para compilar los datos locales ejecuta:\ndpkg-reconfigure locales\n\nOtra cosa."
    sentence, follows = with_what_follows(text, "Para compilar los datos locales ejecuta:")
    assert sentence.endswith("dpkg-reconfigure locales") and follows == "dpkg-reconfigure locales"
    assert with_what_follows(text, "Instala el paquete.") == ("Instala el paquete.", "")


def test_a_long_run_on_sentence_is_quoted_around_the_words_of_the_question():
    """A PDF's "sentence" can run over many lines; the bare citation's quote shows the part the question is
    about (and what follows it), not its first forty words."""
    run_on = ("En este directorio pondrás los guiones hook que se ejecutan en cada compilación, con permiso de "
              "escritura para tu usuario, y establece los archivos de configuración con el siguiente contenido "
              "AUTO_DEBSIGN=no HOOKDIR=/var/cache/hooks y otras opciones que no vienen al caso aquí. Ahora puedes "
              "inicializar el sistema local pbuilder chroot por primera vez ejecutando: $ sudo pbuilder create "
              "Si ya dispones de un paquete fuente completo")
    source = SimpleNamespace(n=1, text=run_on, best=run_on)
    text, _ = compose("[2]", "¿Con qué orden se crea por primera vez el chroot local de pbuilder?", [source], "es")
    assert text is not None and "sudo pbuilder create" in text and text.count(" ") < 50, text


def test_a_quoted_list_item_drops_its_bullet():
    source = SimpleNamespace(n=1, text="Ordres útils:\n• L’ordre wnpp-alert del paquet devscripts", best=None)
    text, _ = compose("[1]", "Quina ordre vigila els paquets wnpp?", [source], "ca")
    assert text is not None and "«L’ordre wnpp-alert" in text and "•" not in text, text
