"""Language detection with lingua: real sentences, mixed/short/empty text, configuration, threads."""

from __future__ import annotations

import threading
import time

import pytest

from extproc.signals import language as lang
from extproc.signals.language import (
    DEFAULT_LANGUAGES,
    LanguageDetector,
    detect_language,
    get_language_detector,
    supported_languages,
)

SENTENCES = {
    "en": "Could you help me write a short cover letter for a job at a bakery?",
    "de": "Kannst du mir bitte erklären, wie die Photosynthese bei Pflanzen funktioniert?",
    "fr": "Pourriez-vous m'aider à rédiger une lettre de motivation pour un stage à Paris ?",
    "es": "¿Me puedes recomendar algunos libros de ciencia ficción para leer este verano?",
    "it": "Vorrei prenotare un tavolo per due persone stasera alle otto, è possibile?",
    "pt": "Você pode me explicar a diferença entre juros simples e juros compostos?",
    "nl": "Kun je me uitleggen hoe ik mijn fiets het beste kan onderhouden in de winter?",
    "sv": "Kan du hjälpa mig att planera en resa till Norrland i sommar?",
    "pl": "Czy możesz mi pomóc napisać krótki e-mail do mojego szefa?",
    "tr": "Bana T\u00fcrk mutfa\u011f\u0131ndan kolay bir ak\u015fam yeme\u011fi tarifi verebilir misin?",
    "ru": "Объясни, пожалуйста, как работает квантовый компьютер простыми словами.",
    "zh": "请帮我写一首关于秋天的短诗。",
    "ja": "東京でおすすめのラーメン屋さんを教えてください。",
    "ko": "서울에서 가볼 만한 박물관을 추천해 주세요.",
    "ar": "هل يمكنك أن تشرح لي كيف يعمل الذكاء الاصطناعي؟",
    "hi": "क्या आप मुझे भारत के इतिहास के बारे में कुछ बता सकते हैं?",
}


@pytest.fixture(scope="module")
def detector() -> LanguageDetector:
    return get_language_detector()  # shared with detect_language(): models load once per test run


def test_default_languages_are_supported_by_lingua() -> None:
    assert set(DEFAULT_LANGUAGES) <= supported_languages()
    assert len(supported_languages()) == 75


@pytest.mark.parametrize("code", sorted(SENTENCES))
def test_real_sentences(detector: LanguageDetector, code: str) -> None:
    detected, confidence = detector.detect(SENTENCES[code])
    assert detected == code
    assert 0.5 < confidence <= 1.0


@pytest.mark.parametrize(("text", "code"), [("Merci beaucoup", "fr"), ("Danke schön", "de"), ("Gracias amigo", "es")])
def test_short_texts(detector: LanguageDetector, text: str, code: str) -> None:
    detected, confidence = detector.detect(text)
    assert detected == code
    assert 0.0 < confidence <= 1.0


def test_mixed_text_has_lower_confidence(detector: LanguageDetector) -> None:
    text = "Ich habe heute keine Zeit, but I will call you tomorrow morning."
    detected, confidence = detector.detect(text)
    assert detected in {"de", "en"}
    assert confidence < 0.75
    values = detector.confidences(text)
    assert values["de"] > 0.2 and values["en"] > 0.2
    assert list(values) == sorted(values, key=values.__getitem__, reverse=True)
    assert abs(sum(values.values()) - 1.0) < 1e-6  # lingua's values are relative over the configured set


@pytest.mark.parametrize("text", ["", "   \n\t", "12345 !!! ???", "😀😀", "-- 3.14 --"])
def test_nothing_to_judge(detector: LanguageDetector, text: str) -> None:
    assert detector.detect(text) == (None, 0.0)


def test_module_function_uses_the_shared_detector(detector: LanguageDetector) -> None:
    assert detect_language(SENTENCES["it"])[0] == "it"
    assert get_language_detector(reversed([c.upper() for c in DEFAULT_LANGUAGES])) is detector


def test_configured_set_limits_the_answers() -> None:
    two = LanguageDetector(["EN", "de", "de"])
    assert two.languages == ("en", "de")
    code, confidence = two.detect(SENTENCES["fr"])
    assert code in {"en", "de"} and 0.0 < confidence <= 1.0
    assert two.detect(SENTENCES["de"])[0] == "de"


def test_unknown_codes_are_rejected() -> None:
    with pytest.raises(ValueError, match="unsupported language code"):
        LanguageDetector(["en", "xx"])
    with pytest.raises(ValueError, match="at least one language"):
        LanguageDetector([])


def test_long_text_is_bounded(detector: LanguageDetector, monkeypatch: pytest.MonkeyPatch) -> None:
    text = SENTENCES["nl"] * 20_000  # ~1.6 MB
    lingua, seen = detector._get(), []

    class Recording:
        def compute_language_confidence_values(self, part: str):
            seen.append(len(part))
            return lingua.compute_language_confidence_values(part)

    monkeypatch.setattr(detector, "_get", Recording)
    assert detector.detect(text)[0] == "nl"
    assert seen == [len(lang._bounded(text, detector.max_chars))]  # lingua only ever sees max_chars characters
    assert seen[0] <= detector.max_chars == 2048


def test_low_accuracy_mode_with_preloaded_models() -> None:
    light = LanguageDetector(DEFAULT_LANGUAGES, low_accuracy=True, preload=True)
    light.warm_up()
    for code in ("en", "de", "es", "ru", "zh"):
        assert light.detect(SENTENCES[code])[0] == code


def test_built_once_under_concurrent_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    builds = []
    original = LanguageDetector._build

    def counting_build(self: LanguageDetector):  # type: ignore[no-untyped-def]
        builds.append(1)
        time.sleep(0.05)  # widen the race window
        return original(self)

    monkeypatch.setattr(LanguageDetector, "_build", counting_build)
    fresh = LanguageDetector(["en", "de", "fr"])
    results: list[tuple[str | None, float]] = []
    errors: list[BaseException] = []

    def work(text: str) -> None:
        try:
            results.append(fresh.detect(text))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(SENTENCES[c],)) for c in ("en", "de", "fr") * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(builds) == 1
    assert sorted({code for code, _ in results}) == ["de", "en", "fr"]
