"""The JSON examples of README.md and docs/ have a live answer's keys.

An example is the indented block after an `<!-- example: GET /path -->` comment
(tests/docs_text.py); its keys, nested, must be exactly the keys of a live
answer from real gunicorn (values vary: pids, times, figures)."""

from __future__ import annotations

from tests.docs_text import PROJECT, documents, examples, shape


def test_the_json_examples_have_the_keys_of_a_live_answer(live_server):
    server = live_server()
    found = [(page, path, example) for page in documents() for path, example in examples(page.read_text())]
    assert found, "no marked JSON example in README.md or docs/"
    for page, path, example in found:
        status, live = server.get_json(path)
        assert status == 200, path
        assert shape(example) == shape(live), (
            f"{page.relative_to(PROJECT)}'s example of GET {path} is not what the service answers now"
        )
