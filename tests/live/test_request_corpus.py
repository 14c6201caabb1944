"""gunicorn's own request corpus, replayed through gunicorn's parser and FitFlix's (fitflix/serving/h1.py).

The corpus is tests/requests/ of gunicorn 27.0.1's sdist: harness/corpus.py fetches it with pip
from PyPI into the user's cache (hence a live test: it needs the network once), and reads each
`.http` file and its `.py` expectation as gunicorn's own tests do. Every file is a test of its own:

- valid/NAME.http: gunicorn's RequestParser (the pure-Python one) and `h1.parse_all` both accept
  it, find the same requests (method, target, path, query, fragment, version, headers after
  gunicorn's header policy, scheme, body, trailers), and both match what NAME.py expects;
- invalid/NAME.http: gunicorn raises what NAME.py names, and h1 refuses it with BadRequest. A
  request h1 accepts there is h1 being looser than gunicorn: the test fails.

h1 may be stricter than gunicorn only where STRICTER says so, case by case, with the reason:
such a valid case is asserted refused by h1, never skipped; one h1 comes to accept fails until
it leaves the table. A config FitFlix's worker does not serve at all (the PROXY protocol) is served
by gthread (SERVED_BY_GTHREAD, asserted through the same decision the start makes). Without the
sdist (no network, no PyPI) every test skips, saying why; under FITFLIX_REQUIRE_CGROUP=1
(.ci/run) they fail instead.
"""

from __future__ import annotations

import dataclasses

import pytest

from fitflix.serving import h1
from fitflix.serving.sizing import own_worker_cannot_serve
from harness import corpus
from harness.corpus import PEER, Parsed
from tests.conftest import REQUIRE_CGROUP

VALID_FILES = [f"{name}.http" for name in corpus.VALID_NAMES]
INVALID_FILES = [f"{name}.http" for name in corpus.INVALID_NAMES]

# Valid cases h1 refuses on purpose, as fitflix/serving/h1.py documents: file name -> why (one line).
# Each is asserted refused by h1.
STRICTER: dict[str, str] = {
    "028.http": "llhttp refuses whitespace before a header's colon, even where strip_header_spaces strips it",
    "013.http": "llhttp refuses whitespace inside a chunk extension (`5; some; parameters=stuff`)",
    "031.http": "llhttp knows only registered method names: -BLARGH is refused",
    "031compat.http": "llhttp knows only registered method names: -BLARGH is refused",
    "031compat2.http": "llhttp knows only registered method names: -blargh is refused",
    "099.http": "parse_all refuses an unfinished request: 8,599 body bytes of a Content-Length of 17,914",
    "compat_obs_fold.http": "llhttp never folds lines: obsolete folding is refused even under permit_obsolete_folding",
    "compat_obs_fold_huge.http": "llhttp never folds lines: folding is refused even under permit_obsolete_folding",
}

# Valid cases whose config FitFlix's worker does not serve at all: gthread does (own_worker_cannot_serve, said
# in the log at the start). Each is asserted so: a config h1's worker would take must leave this table.
SERVED_BY_GTHREAD: dict[str, str] = {
    "pp_01.http": "proxy_protocol is on",
    "pp_02.http": "proxy_protocol is on",
    "pp_04.http": "proxy_protocol is on (v2)",
    "pp_05.http": "proxy_protocol is on (v2)",
}


@pytest.fixture(scope="module")
def corpus_root():
    """The extracted corpus (valid/, invalid/); skip when it cannot be had (fail under FITFLIX_REQUIRE_CGROUP=1)."""
    try:
        return corpus.fetch_corpus()
    except corpus.CorpusUnavailable as error:
        if REQUIRE_CGROUP:
            pytest.fail(f"FITFLIX_REQUIRE_CGROUP=1 but gunicorn {corpus.GUNICORN_VERSION}'s sdist: {error}")
        pytest.skip(f"gunicorn {corpus.GUNICORN_VERSION}'s sdist could not be fetched from PyPI: {error}")


def h1_parse(data: bytes, cfg) -> list[Parsed]:
    """Every request h1 finds in `data`, under the rules of gunicorn's `cfg`, in the shape gunicorn_parse gives."""
    return [
        Parsed.of(request, bytes(request.body)) for request in h1.parse_all(data, h1.HeadRules.from_cfg(cfg), peer=PEER)
    ]


def as_expected(parsed: list[Parsed]) -> tuple[Parsed, ...]:
    """What a .py file can say of these requests (it says nothing of the scheme)."""
    return tuple(dataclasses.replace(request, scheme=None) for request in parsed)


def shown(data: bytes, limit: int = 300) -> str:
    return repr(data) if len(data) <= limit else f"{data[:limit]!r}... ({len(data)} bytes)"


def test_the_stricter_table_names_valid_cases_only():
    assert set(STRICTER) | set(SERVED_BY_GTHREAD) <= set(VALID_FILES)
    assert not set(STRICTER) & set(SERVED_BY_GTHREAD)
    assert all(reason.strip() and "\n" not in reason for reason in STRICTER.values())


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", VALID_FILES, ids=VALID_FILES)
def test_a_valid_request_parses_the_same_in_gunicorn_and_h1(corpus_root, name):
    case = corpus.valid_case(corpus_root, name.removesuffix(".http"))
    by_gunicorn = corpus.gunicorn_parse(case.data, case.cfg)
    assert as_expected(by_gunicorn) == case.expected, f"gunicorn itself does not meet valid/{name[:-5]}.py"

    if name in SERVED_BY_GTHREAD:
        reason = own_worker_cannot_serve(
            bool(case.cfg.is_ssl), case.cfg.protocol, case.cfg.proxy_protocol, list(case.cfg.http_protocols), True
        )
        assert reason is not None, f"{name}: h1's worker would serve this config ({SERVED_BY_GTHREAD[name]})"
        return

    if name in STRICTER:
        with pytest.raises(h1.BadRequest):
            accepted = h1.parse_all(case.data, h1.HeadRules.from_cfg(case.cfg), peer=PEER)
            pytest.fail(f"h1 accepts {name}, listed as refused ({STRICTER[name]}): {accepted!r}")
        return

    try:
        by_h1 = h1_parse(case.data, case.cfg)
    except h1.BadRequest as refused:
        pytest.fail(
            f"h1 refuses {name} ({refused.status} {refused.reason}: {refused.message}), which gunicorn accepts: "
            f"{shown(case.data)}; if that is by design, it belongs in STRICTER with its reason"
        )
    assert by_h1 == by_gunicorn, f"h1 and gunicorn parse {name} differently: {shown(case.data)}"
    assert as_expected(by_h1) == case.expected


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", INVALID_FILES, ids=INVALID_FILES)
def test_an_invalid_request_is_refused_by_gunicorn_and_h1(corpus_root, name):
    case = corpus.invalid_case(corpus_root, name.removesuffix(".http"))
    with pytest.raises(case.expected):
        corpus.gunicorn_parse(case.data, case.cfg)

    try:
        accepted = h1_parse(case.data, case.cfg)
    except h1.BadRequest as refused:
        assert 400 <= refused.status < 600, (refused.status, refused.reason, refused.message)
    else:
        pytest.fail(
            f"h1 is looser than gunicorn: it accepts {name}, which gunicorn refuses with "
            f"{case.expected.__name__}: {shown(case.data)} -> {accepted!r}"
        )
