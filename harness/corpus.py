"""gunicorn's own request corpus (tests/requests/ of its sdist), fetched from PyPI when a test asks for it.

gunicorn ships its parser's test requests in its source distribution, never in the wheel:
`valid/NAME.http` with `valid/NAME.py` (the requests gunicorn must parse, and what it must make
of them) and `invalid/NAME.http` with `invalid/NAME.py` (the exception gunicorn must raise).
`fetch_corpus()` runs `python -m pip download --no-deps --no-binary :all: gunicorn==27.0.1` into
a folder of the user's cache ($XDG_CACHE_HOME/fitflix/corpus, else ~/.cache/fitflix/corpus),
checks the archive against the pinned sha256 and extracts those files there, once; nothing of the
corpus is copied into this repository. `valid_cases()` and `invalid_cases()` then read the files
the way gunicorn's own tests do (the sdist's tests/treq.py, tests/test_valid_requests.py and
tests/test_invalid_requests.py):

- an `.http` file's line breaks are layout: they are dropped, and the escapes `\\r\\n`, `\\0`,
  `\\n`, `\\t` and `\\xHH` give the bytes (`http_bytes`);
- an `.py` file runs in a fresh module that has `uri` (below) and `cfg` (a default gunicorn
  Config) in its globals; it may set options on that `cfg` or bind a new one, and binds `request`:
  a dict or a list of dicts (valid), an exception class (invalid). `http_parser` is then set to
  "python", gunicorn's pure-Python parser, as treq.load_py does.

`gunicorn_parse` replays bytes through gunicorn's RequestParser as a worker would, each body read
whole, into `Parsed` records, the shape a case's expected requests take too.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gunicorn.config import Config
from gunicorn.http.parser import RequestParser
from gunicorn.util import split_request_uri

GUNICORN_VERSION = "27.0.1"
# PyPI's files never change; a cached or downloaded archive with another hash is not this corpus.
SDIST_NAME = f"gunicorn-{GUNICORN_VERSION}.tar.gz"
SDIST_SHA256 = "b1514965361c8b7e8107a80aa2a92636878df1ccfac6dd204a676426e04d9e3e"
FETCH_TIMEOUT_S = 150.0
PEER = ("127.0.0.1", 40000)

# The corpus of gunicorn 27.0.1, file by file (checked against the sdist by fetch_corpus), so that a
# test can be parametrized over it without going to the network while it is collected.
VALID_NAMES: tuple[str, ...] = tuple(
    """
    001 002 003 004 005 006 007 008 010 011 012 013 014 015 017 018 019 020 021 022 023 024 025 025_line 026
    028 029 030 031 031compat 031compat2 040 040_compat 099 100 compat_obs_fold compat_obs_fold_huge padding_01
    pp_01 pp_02 pp_03 pp_04 pp_05
    rfc9110_body_framing_get_cl_nonzero_01 rfc9110_body_framing_get_cl_zero_01 rfc9110_body_framing_http10_cl_01
    rfc9110_field_name_special_chars_01 rfc9110_field_value_htab_trim_01 rfc9110_field_value_obs_text_01
    rfc9112_chunked_ext_quoted_01 rfc9112_chunked_size_leading_zeros_01 rfc9112_chunked_size_uppercase_hex_01
    rfc9112_leading_crlf_01 rfc9112_smuggle_gzip_chunked_01 rfc9112_smuggle_te_identity_chunked_01
    rfc9112_target_absolute_01 rfc9112_target_absolute_https_01 rfc9112_target_absolute_ipv6_01
    rfc9112_target_absolute_userinfo_01 rfc9112_target_asterisk_options_01 rfc9112_target_authority_connect_01
    rfc9112_target_authority_ipv6_01
    """.split()
)
INVALID_NAMES: tuple[str, ...] = tuple(
    """
    001 002 003 003b 003c 004 005 006 007 008 009 010 011 012 013 014 015 016 017 018 019 020 021 022 023 024
    040 041 042 chunked_01 chunked_02 chunked_03 chunked_04 chunked_05 chunked_06 chunked_07 chunked_08 chunked_09
    chunked_10 chunked_11 chunked_12 chunked_13 chunked_14 invalid_field_value_01 limit_header_default_01
    nonascii_01 nonascii_02 nonascii_03 nonascii_04 obs_fold_01 pp_01 pp_02 pp_03
    prefix_01 prefix_02 prefix_03 prefix_04 prefix_05 prefix_06
    rfc9110_field_value_ctl_bel_01 rfc9110_field_value_ctl_del_01 rfc9110_trailer_forbidden_cl_01
    rfc9110_trailer_forbidden_host_01 rfc9110_trailer_forbidden_te_01 rfc9112_bare_lf_01
    rfc9112_chunked_missing_final_crlf_01 rfc9112_chunked_size_minus_sign_01 rfc9112_chunked_size_plus_sign_01
    rfc9112_leading_crlf_02 rfc9112_smuggle_cl_list_form_01 rfc9112_smuggle_cl_te_chunked_01
    rfc9112_target_asterisk_non_options_01 rfc9112_target_authority_non_connect_01 rfc9112_target_non_ascii_01
    rfc9112_target_non_ascii_02 rfc9112_target_nul_01 rfc9112_target_relative_01 rfc9112_te_identity_with_cl_01
    rfc9112_te_not_chunked_final_01 version_01 version_02
    """.split()
)
_MEMBER = re.compile(
    rf"gunicorn-{re.escape(GUNICORN_VERSION)}/tests/requests/(valid|invalid)/([A-Za-z0-9_]+\.(?:http|py))"
)


class CorpusUnavailable(Exception):
    """The sdist could not be had (no network, no PyPI, pip failed): the tests that need it cannot run here."""


class CorpusMismatch(AssertionError):
    """What was had is not gunicorn 27.0.1's corpus as pinned here (another archive, other files)."""


@dataclass(frozen=True)
class Parsed:
    """One request as a parser made it, or as an .py file expects it."""

    method: str
    uri: str
    path: str
    query: str
    fragment: str
    version: tuple[int, int]
    headers: tuple[tuple[str, str], ...]
    body: bytes
    trailers: tuple[tuple[str, str], ...]
    scheme: str | None = None  # an .py file does not say: None there

    @classmethod
    def of(cls, request, body: bytes) -> Parsed:
        """What gunicorn's Request, or h1's, names so (both use gunicorn's names), with `body` read whole."""
        return cls(
            method=request.method,
            uri=request.uri,
            path=request.path,
            query=request.query,
            fragment=request.fragment,
            version=tuple(request.version),
            headers=tuple(tuple(header) for header in request.headers),
            body=body,
            trailers=tuple(tuple(trailer) for trailer in request.trailers or ()),
            scheme=request.scheme,
        )


@dataclass(frozen=True)
class ValidCase:
    name: str  # the .http file's name, "001.http"
    data: bytes
    expected: tuple[Parsed, ...]
    cfg: Config


@dataclass(frozen=True)
class InvalidCase:
    name: str
    data: bytes
    expected: type[Exception]
    cfg: Config


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/fitflix/corpus, else ~/.cache/fitflix/corpus."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fitflix" / "corpus"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(into: Path, python: str) -> Path:
    """pip download the sdist into `into` (a fresh folder); the archive's path."""
    command = [python, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    command += [f"gunicorn=={GUNICORN_VERSION}", "-d", str(into)]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, env=env, check=False, cwd=into
        )
    except subprocess.TimeoutExpired:
        raise CorpusUnavailable(f"`{' '.join(command)}` did not finish within {FETCH_TIMEOUT_S:.0f} s") from None
    except OSError as error:
        raise CorpusUnavailable(f"`{' '.join(command)}` could not run: {error}") from None
    archive = into / SDIST_NAME
    if done.returncode != 0 or not archive.is_file():
        last = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise CorpusUnavailable(f"`{' '.join(command)}` exited with {done.returncode}: {last}")
    return archive


def _extract(archive: Path, into: Path) -> None:
    """The corpus files of `archive`, and only those, into `into`/valid and `into`/invalid (regular files only)."""
    for kind in ("valid", "invalid"):
        (into / kind).mkdir(parents=True)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            match = _MEMBER.fullmatch(member.name)
            if match is None or not member.isfile():
                continue
            source = tar.extractfile(member)
            assert source is not None
            (into / match[1] / match[2]).write_bytes(source.read())


def _check_names(root: Path) -> None:
    for kind, names in (("valid", VALID_NAMES), ("invalid", INVALID_NAMES)):
        found = {path.name for path in (root / kind).iterdir()}
        wanted = {f"{name}{suffix}" for name in names for suffix in (".http", ".py")}
        if found != wanted:
            raise CorpusMismatch(
                f"gunicorn {GUNICORN_VERSION}'s tests/requests/{kind}/ is not the corpus listed in harness/corpus.py: "
                f"not listed {sorted(found - wanted)}, missing {sorted(wanted - found)}"
            )


def fetch_corpus(python: str | None = None) -> Path:
    """The folder holding valid/ and invalid/ of gunicorn 27.0.1's request corpus, fetched and cached on first use.

    Raises CorpusUnavailable when pip cannot get the sdist, CorpusMismatch when what it got is not the pinned one.
    Several test runs at once (3.11 and 3.13) take turns on a lock in the cache folder.
    """
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    root = cache / f"gunicorn-{GUNICORN_VERSION}" / "requests"
    complete = root / ".complete"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if complete.is_file():
            _check_names(root)
            return root
        archive = cache / SDIST_NAME
        if archive.is_file() and _sha256(archive) != SDIST_SHA256:
            archive.unlink()  # a partial or foreign file: fetch it again
        if not archive.is_file():
            with tempfile.TemporaryDirectory(dir=cache, prefix="download-") as download:
                fetched = _download(Path(download), python or sys.executable)
                digest = _sha256(fetched)
                if digest != SDIST_SHA256:
                    raise CorpusMismatch(f"pip downloaded {SDIST_NAME} with sha256 {digest}, not {SDIST_SHA256}")
                os.replace(fetched, archive)
        shutil.rmtree(root.parent, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(dir=cache, prefix="extract-"))
        try:
            _extract(archive, staging / "requests")
            _check_names(staging / "requests")
            os.replace(staging, root.parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        complete.write_text(f"{SDIST_NAME} {SDIST_SHA256}\n")
        return root


def uri(data: str) -> dict:
    """What a .py file's `uri(...)` gives: gunicorn's tests/treq.py uri(), the target split the way gunicorn does."""
    parts = split_request_uri(data)
    return {
        "raw": data,
        "scheme": parts.scheme or "",
        "host": parts.netloc.rsplit(":", 1)[0] or None,
        "port": parts.port or 80,
        "path": parts.path or "",
        "query": parts.query or "",
        "fragment": parts.fragment or "",
    }


def _decode_hex_escapes(data: bytes) -> bytes:
    """treq.decode_hex_escapes, as it is (a \\xHH in the last four bytes is left alone)."""
    result = bytearray()
    index = 0
    while index < len(data):
        if index + 3 < len(data) and data[index : index + 2] == b"\\x":
            try:
                result.append(int(data[index + 2 : index + 4], 16))
                index += 4
                continue
            except ValueError:
                pass
        result.append(data[index])
        index += 1
    return bytes(result)


def http_bytes(raw: bytes) -> bytes:
    """The bytes an .http file stands for (treq.request and treq.badrequest)."""
    data = raw.replace(b"\n", b"").replace(b"\\r\\n", b"\r\n")
    data = data.replace(b"\\0", b"\000").replace(b"\\n", b"\n").replace(b"\\t", b"\t")
    data = _decode_hex_escapes(data)
    if b"\\" in data:
        raise CorpusMismatch("a backslash is left in the request: an escape gunicorn's tests do not handle")
    return data


def load_expectation(path: Path) -> dict:
    """Run an .py file as treq.load_py does; its globals (`request`, `cfg`, ...), with cfg's parser the Python one."""
    module = types.ModuleType("__config__")
    module.uri = uri
    module.cfg = Config()
    code = compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
    exec(code, vars(module))  # gunicorn's own test file, from the pinned sdist
    module.cfg.set("http_parser", "python")
    return vars(module)


def _expected_request(entry: dict) -> Parsed:
    body = entry["body"]
    if isinstance(body, str):
        body = body.encode("latin-1")  # 026.py writes its empty body as ''
    target = entry["uri"]
    return Parsed(
        method=entry["method"],
        uri=target["raw"],
        path=target["path"],
        query=target["query"],
        fragment=target["fragment"],
        version=tuple(entry["version"]),
        headers=tuple(tuple(header) for header in entry["headers"]),
        body=body,
        trailers=tuple(tuple(trailer) for trailer in entry.get("trailers", [])),
    )


def valid_case(root: Path, name: str) -> ValidCase:
    """valid/NAME.http (name without ".http") with what valid/NAME.py expects of it."""
    env = load_expectation(root / "valid" / f"{name}.py")
    expect = env["request"]
    entries = expect if isinstance(expect, list) else [expect]
    data = http_bytes((root / "valid" / f"{name}.http").read_bytes())
    return ValidCase(f"{name}.http", data, tuple(_expected_request(entry) for entry in entries), env["cfg"])


def invalid_case(root: Path, name: str) -> InvalidCase:
    """invalid/NAME.http with the exception class invalid/NAME.py expects gunicorn to raise."""
    env = load_expectation(root / "invalid" / f"{name}.py")
    expected = env["request"]
    if not (isinstance(expected, type) and issubclass(expected, Exception)):
        raise CorpusMismatch(f"invalid/{name}.py's request is {expected!r}, not an exception class")
    data = http_bytes((root / "invalid" / f"{name}.http").read_bytes())
    return InvalidCase(f"{name}.http", data, expected, env["cfg"])


def valid_cases(root: Path) -> Iterator[ValidCase]:
    for name in VALID_NAMES:
        yield valid_case(root, name)


def invalid_cases(root: Path) -> Iterator[InvalidCase]:
    for name in INVALID_NAMES:
        yield invalid_case(root, name)


def gunicorn_parse(data: bytes, cfg: Config, peer: tuple[str, int] = PEER) -> list[Parsed]:
    """Every request gunicorn's RequestParser finds in `data` (sent in one piece), each body read whole.

    Raises what gunicorn raises at the first bad request, as a worker would meet it.
    """
    parsed: list[Parsed] = []
    for request in RequestParser(cfg, iter([data]), peer):
        body = bytearray()
        while chunk := request.body.read(65536):
            body += chunk
        parsed.append(Parsed.of(request, bytes(body)))
    return parsed
