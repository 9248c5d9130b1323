"""The clean stage's document rules: quality (Gopher/C4), language, and PII scrubbing.

Each quality rule gets a crafted document that breaks it and no other rule: the document is
rejected with that rule's name, and passes once that rule is switched off (threshold null).
"""

import random

import pytest

from lm_core.clean.language import check_language
from lm_core.clean.pii import scrub_pii
from lm_core.clean.quality import QUALITY_REASONS, check_quality
from lm_core.config import LanguageConfig, PIIConfig, QualityConfig

GOOD = """\
The lighthouse keeper kept a careful log of every ship that passed the rocky point.
Most entries were brief, but during the storms of early winter they grew long and anxious.

Visitors rarely came, although a supply boat arrived every second Tuesday with flour,
lamp oil and a bundle of newspapers that were always at least a week old.
He read them slowly, saving the crossword for the evenings when the wind was loudest.

Over the years he learned to predict the weather from the colour of the morning sky
and the behaviour of the gulls, which gathered on the eastern cliffs before rain.
His notebooks, now kept in the town museum, describe those signs in patient detail.

When the light was finally automated, he moved to a small cottage near the harbour.
Children from the village would ask him about shipwrecks, and he answered honestly:
there had been only two, and in both cases every sailor had been brought safely ashore.
"""

_VOCAB = (
    "river stone garden window market letter summer paper engine forest bridge candle "
    "silver orange pencil ladder kitchen winter harbor island planet rocket violin castle "
    "meadow thunder blanket mirror pillow tunnel basket jacket wallet button ribbon anchor "
    "compass lantern marble saddle barrel needle cactus falcon walnut copper velvet quarry"
).split()


def prose(n_words: int, seed: int, words_per_line: int = 12) -> str:
    """Word salad from an English vocabulary: no repeated n-grams to speak of."""
    rng = random.Random(seed)
    words = [rng.choice(_VOCAB) for _ in range(n_words)]
    lines = [" ".join(words[i : i + words_per_line]) + "." for i in range(0, n_words, words_per_line)]
    return "\n".join(lines)


def _short_words(n: int, seed: int) -> str:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(2)) for _ in range(n)]
    return "\n".join(" ".join(words[i : i + 10]) for i in range(0, n, 10))


def _long_words(n: int, seed: int) -> str:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(12, 15))) for _ in range(n)]
    return "\n".join(" ".join(words[i : i + 8]) for i in range(0, n, 8))


def _with_numbers(n: int, seed: int) -> str:
    rng = random.Random(seed)
    tokens = [str(rng.randint(100, 99999)) if i % 2 else rng.choice(_VOCAB) for i in range(n)]
    return "\n".join(" ".join(tokens[i : i + 10]) for i in range(0, n, 10))


def _hashtags() -> str:
    lines = prose(200, seed=3, words_per_line=10).split("\n")
    return "\n".join(f"{line} #{_VOCAB[i]}{i} #{_VOCAB[-i - 1]}" for i, line in enumerate(lines))


def _ellipsis_lines() -> str:
    lines = prose(240, seed=4).split("\n")
    return "\n".join(line[:-1] + "..." if i % 2 else line for i, line in enumerate(lines))


def _bullets() -> str:
    return "\n".join("- " + line for line in prose(240, seed=5).split("\n"))


def _repeated_separator_lines() -> str:
    # nine lines in ten are the same "***" separator: words never repeat, lines do
    blocks = [line + "\n***\n***\n***\n***\n***" for line in prose(120, seed=6).split("\n")]
    return "\n".join(blocks)


def _repeated_long_lines() -> str:
    # a few long lines each repeated several times: most characters, not most lines, repeat
    rng = random.Random(7)
    repeated = [", ".join(rng.choice(_VOCAB)[:3] for _ in range(30)) + "." for _ in range(6)]
    unique = prose(60, seed=8, words_per_line=6).split("\n")
    lines = unique[:5] + [line for line in repeated for _ in range(5)] + unique[5:]
    return "\n".join(lines)


def _repeated_short_paragraphs() -> str:
    paragraphs = prose(200, seed=9, words_per_line=20).split("\n")
    out = []
    for i, p in enumerate(paragraphs):
        out.append(p)
        if i < 8:
            out.append("Read more.")
    return "\n\n".join(out)


def _repeated_long_paragraph() -> str:
    long = prose(60, seed=10, words_per_line=60)
    unique = prose(120, seed=11, words_per_line=12).split("\n")
    return "\n\n".join(unique[:5] + [long] + unique[5:] + [long, long])


def _keyword_stuffing() -> str:
    lines = prose(300, seed=12, words_per_line=4).split("\n")
    return "\n".join(f"{line[:-1]} cheap watches." for line in lines)


def _repeated_sentence() -> str:
    sentence = prose(30, seed=13, words_per_line=30)[:-1]
    return "\n".join(f"{word} {sentence}." for word in _VOCAB[:20])


CRAFTED = {
    "min_words": ("A short note with only a dozen words in it, and nothing more.", {}),
    "max_words": (GOOD, {"max_words": 100}),
    "min_mean_word_length": (_short_words(200, seed=1), {}),
    "max_mean_word_length": (_long_words(200, seed=2), {}),
    "max_symbol_word_ratio": (_hashtags(), {}),
    "min_alpha_word_fraction": (_with_numbers(200, seed=1), {}),
    "max_ellipsis_line_fraction": (_ellipsis_lines(), {}),
    "max_bullet_line_fraction": (_bullets(), {}),
    "max_duplicate_line_fraction": (_repeated_separator_lines(), {}),
    "max_duplicate_line_char_fraction": (_repeated_long_lines(), {}),
    "max_duplicate_paragraph_fraction": (_repeated_short_paragraphs(), {}),
    "max_duplicate_paragraph_char_fraction": (_repeated_long_paragraph(), {}),
    "max_top_ngram_char_fraction": (_keyword_stuffing(), {}),
    "max_duplicate_ngram_char_fraction": (_repeated_sentence(), {}),
}


def test_every_rule_has_a_crafted_document():
    assert set(CRAFTED) == set(QUALITY_REASONS)


def test_a_good_paragraph_rich_document_passes_both_profiles():
    for profile in ("docs", "web"):
        assert check_quality(GOOD, QualityConfig(profile=profile)) is None
        assert check_quality(prose(400, seed=0), QualityConfig(profile=profile)) is None


@pytest.mark.parametrize("rule", list(CRAFTED))
def test_each_rule_rejects_the_document_made_to_break_it(rule):
    """With Gopher's thresholds (the web profile), one rule at a time."""
    text, overrides = CRAFTED[rule]
    threshold = getattr(QualityConfig(profile="web", **overrides), rule)
    alone = QualityConfig(profile="web", **{**{name: None for name in QUALITY_REASONS}, rule: threshold})
    rejection = check_quality(text, alone)
    assert rejection is not None and rejection.reason == rule, rejection
    assert any(ch.isdigit() for ch in rejection.detail)  # the measured value is in the detail
    if not overrides:
        assert check_quality(GOOD, alone) is None


def test_the_docs_profile_still_rejects_spam_and_gibberish():
    for rule in ("min_mean_word_length", "max_ellipsis_line_fraction", "max_top_ngram_char_fraction",
                 "max_duplicate_ngram_char_fraction"):  # fmt: skip
        rejection = check_quality(CRAFTED[rule][0], QualityConfig())
        assert rejection is not None and rejection.reason == rule, (rule, rejection)


def test_a_profile_sets_the_thresholds_not_given_and_a_given_one_wins():
    assert QualityConfig().profile == "docs" and QualityConfig().max_bullet_line_fraction is None
    web = QualityConfig(profile="web")
    assert (web.min_words, web.max_duplicate_line_fraction, web.max_bullet_line_fraction) == (50, 0.3, 0.9)
    assert QualityConfig(profile="web", min_words=5).min_words == 5
    assert QualityConfig(profile="web", max_bullet_line_fraction=None).max_bullet_line_fraction is None


def test_rules_measure_prose_and_code_only_counts_toward_length():
    code = "\n".join(f"    value_{i} = compute({i}, {i * 7} + 0x{i:04x})  # {i}" for i in range(60))
    page = f"Each value below is computed once, at import.\n\n```python\n{code}\n```"
    # 60 lines of numbers and symbols: no rule about prose speaks of them, and the page is long enough
    assert check_quality(page, QualityConfig(profile="web", min_words=20)) is None
    assert check_quality(code, QualityConfig(profile="web", min_words=20)) is not None  # unfenced, it is prose
    # the markup the clean stage writes is not words: heading marks, bullets, table bars
    rows = "\n".join(f"| {w} | {w.upper()} |" for w in ("rising", "falling", "slack", "spring", "neap") * 8)
    table = f"## Tides\n\n- kinds\n- names\n\n| kind | name |\n| --- | --- |\n{rows}"
    alpha = QualityConfig(profile="web", **{**{name: None for name in QUALITY_REASONS}, "min_alpha_word_fraction": 0.8})
    assert check_quality(table, alpha) is None  # counted as words, the bars alone would be 3 tokens in 5


def test_all_rules_off_accepts_anything():
    off = QualityConfig(**{name: None for name in QUALITY_REASONS})
    assert check_quality("", off) is None
    assert check_quality("*** *** ***", off) is None


def test_rules_detail_names_value_and_threshold():
    rejection = check_quality("too short", QualityConfig())
    assert rejection.reason == "min_words"
    assert rejection.detail == "2 words < 20"


# ----------------------------------------------------------------------------- language

GERMAN = (
    "Der Leuchtturmwärter führte ein sorgfältiges Logbuch über jedes Schiff, das die felsige "
    "Landzunge passierte. Die meisten Einträge waren kurz, doch während der Stürme im frühen "
    "Winter wurden sie lang und besorgt. Besucher kamen selten, obwohl jeden zweiten Dienstag "
    "ein Versorgungsboot mit Mehl, Lampenöl und einem Bündel alter Zeitungen ankam."
)


def test_language_filter_off_identifies_nothing():
    assert check_language(GERMAN, LanguageConfig()) == (None, None)


def test_language_filter_keeps_listed_languages_and_records_the_code():
    guess, refusal = check_language(GOOD, LanguageConfig(keep=["en"]))
    assert refusal is None and guess.code == "en" and guess.score > 0.9


def test_language_filter_drops_other_languages():
    guess, refusal = check_language(GERMAN, LanguageConfig(keep=["en", "fr"]))
    assert guess.code == "de"
    assert refusal.startswith("de (")
    assert check_language(GERMAN, LanguageConfig(keep=["de"]))[1] is None


def test_language_filter_drops_low_confidence():
    guess, refusal = check_language(GOOD, LanguageConfig(keep=["en"], min_score=1.0))
    if guess.score < 1.0:  # a probability that rounds to exactly 1.0 cannot be below it
        assert "score" in refusal


# ----------------------------------------------------------------------------- PII


def test_emails_are_replaced_and_counted():
    out = scrub_pii("Write to jane.doe+news@example.co.uk or bob@redivi.com today.", PIIConfig())
    assert out.text == "Write to <email> or <email> today."
    assert out.counts == {"email": 2}


def test_public_ips_are_replaced_private_and_documentation_ones_kept():
    text = (
        "Public 8.8.8.8 and 2606:4700:4700::1111; private 192.168.1.10, 10.0.0.1, loopback 127.0.0.1 "
        "and ::1, documentation 203.0.113.5 and 2001:db8::1."
    )
    out = scrub_pii(text, PIIConfig())
    assert out.text == (
        "Public <ip> and <ip>; private 192.168.1.10, 10.0.0.1, loopback 127.0.0.1 "
        "and ::1, documentation 203.0.113.5 and 2001:db8::1."
    )
    assert out.counts == {"ip": 2}
    everything = scrub_pii(text, PIIConfig(only_public_ips=False))
    assert "192.168" not in everything.text and "203.0.113.5" not in everything.text
    assert "2001:db8::1" not in everything.text


def test_things_that_look_like_ips_but_are_not():
    text = "Version 1.2.3.4.5, 999.1.1.1, slice x[::2], time 12:30:45, MAC 00:1A:2B:3C:4D:5E, the word add::"
    out = scrub_pii(text, PIIConfig(only_public_ips=False))
    assert out.text == text and not out.counts


@pytest.mark.parametrize(
    "phone",
    [
        "+44 20 7946 0958",
        "+1-202-555-0143",
        "+1 (202) 555-0143",
        "(202) 555-0143",
        "202.555.0143",
        "020 7946 0958",
        "06 12 34 56 78",
        "030-12345678",
        "+4915112345678",
        "+33 1 23 45 67 89",
    ],
)
def test_phone_numbers_are_replaced(phone):
    out = scrub_pii(f"Call {phone} after nine.", PIIConfig())
    assert out.text == "Call <phone> after nine."
    assert out.counts == {"phone": 1}


@pytest.mark.parametrize(
    "not_a_phone",
    [
        "Python 3.11.7",
        "released 2024-01-15",
        "on 15.01.2024",
        "on 2024/01/15",
        "at 2024-01-15 10:30",
        "x = 12345678901234",
        "y = 0x1F2E3D4C5B6A",
        "n = 1234567890",
        "pi = 3.14159265358979",
        "Decimal('+35236450.6')",
        "1e+10",
        "ISBN 978-3-16-148410-0",
        "port 8080",
        "sha 9f86d081884c7d65",
    ],
)
def test_versions_dates_and_digits_in_code_are_not_phones(not_a_phone):
    out = scrub_pii(not_a_phone, PIIConfig())
    assert out.text == not_a_phone


@pytest.mark.parametrize(
    ("leak", "scrubbed"),
    [
        # what pydoc showed of os.environ before its server got an environment of its own
        (
            "environ({'PATH': '/usr/bin', 'AWS_SECRET_ACCESS_KEY': 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'})",
            "environ({'PATH': '/usr/bin', 'AWS_SECRET_ACCESS_KEY': '<secret>'})",
        ),
        ("export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "export AWS_ACCESS_KEY_ID=<secret>"),
        ("MLFLOW_TRACKING_PASSWORD=hunter2hunter2 mlflow ui", "MLFLOW_TRACKING_PASSWORD=<secret> mlflow ui"),
        ("password: Tr0ub4dor&3", "password: <secret>"),
        ('{"api_key": "a1b2c3d4e5f6g7h8"}', '{"api_key": "<secret>"}'),
        (
            "url: postgresql://lmforge:s3cret@db.example.com:5432/prefect",
            "url: postgresql://lmforge:<secret>@db.example.com:5432/prefect",
        ),
        ("push with ghp_16C7e42F292c6912E7710c838347Ae178B4a now", "push with <secret> now"),
        ("SLACK=xoxb-123456789012-abcdefghij", "SLACK=<secret>"),
        ("key AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q here", "key <secret> here"),
        ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc.", "stripe <secret>."),
        (
            "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "Bearer <secret>",
        ),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nq2w3\n-----END RSA PRIVATE KEY-----\nend",
            "<secret>\nend",
        ),
    ],
)
def test_secrets_are_replaced_and_counted(leak, scrubbed):
    out = scrub_pii(leak, PIIConfig())
    assert out.text == scrubbed
    assert out.counts == {"secret": 1}


@pytest.mark.parametrize(
    "not_a_secret",
    [
        "max_tokens=1024, num_tokens=12345678",  # digits only: a count, not a key
        "token = tokens[0]; api_key = os.environ['API_KEY']",  # code that reads a secret, not one
        "password=None, passwd='', secret_key = SECRET_KEY",
        "tokenize.generate_tokens(readline) yields TokenInfo; secrets.token_hex(16)",
        "see https://docs.python.org/3/library/os.html#os.environ",
        "the task-runner sk-learn and AKIA-style names",
    ],
)
def test_code_and_prose_about_secrets_are_left_alone(not_a_secret):
    out = scrub_pii(not_a_secret, PIIConfig())
    assert out.text == not_a_secret and not out.counts


def test_a_password_in_a_url_is_a_secret_not_an_email():
    out = scrub_pii("DSN postgresql://app:pw1234@db.example.com/app or mail ops@example.com", PIIConfig())
    assert out.text == "DSN postgresql://app:<secret>@db.example.com/app or mail <email>"
    assert out.counts == {"secret": 1, "email": 1}


def test_pii_kinds_can_be_switched_off_and_replacements_configured():
    text = "mail bob@example.com from 8.8.8.8 or call +44 20 7946 0958"
    cfg = PIIConfig(emails=False, ip_addresses=False, phone_replacement="[PHONE]")
    out = scrub_pii(text, cfg)
    assert out.text == "mail bob@example.com from 8.8.8.8 or call [PHONE]"
    assert out.counts == {"phone": 1}
    leak = "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG"
    assert scrub_pii(leak, PIIConfig(secrets=False)).text == leak
    assert scrub_pii(leak, PIIConfig(secret_replacement="[KEY]")).text == "AWS_SECRET_ACCESS_KEY=[KEY]"
