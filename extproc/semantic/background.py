"""Background phrases: what ordinary off-topic traffic looks like, for rejecting it.

A domain classifier that only knows its domains sends every request to the nearest one, chit-chat
included. Comparing a request with a few hundred generic phrases as well (greetings, jokes, trivia,
small talk, everyday questions) tells "near a domain" from "near nothing in particular": a request
goes to a domain only when it is closer to that domain than to the background.

The phrases are the opening user turns of the English files of `chatterbot-corpus` (a PyPI data
package, installed by the semantic extra; lines under 200 characters), which is small talk and
trivia, plus data/background.txt, written for Quorum: the how-to questions, writing tasks and
hobbies that assistants get and that no domain owns. Some are on the topics of configured domains
(chatterbot's sports, health, money and coding files); the classifier drops those per config,
from the examples alone (extproc.semantic.domains).
`python -m extproc.semantic.build` embeds them with the local model once; a remote engine embeds
them at start.
"""

from __future__ import annotations

import functools
from importlib import resources

from extproc.semantic.errors import EngineUnavailable

__all__ = ["CORPUS_PACKAGE", "background_texts"]

CORPUS_PACKAGE = "chatterbot_corpus"
_MAX_CHARS = 200


@functools.cache
def background_texts() -> tuple[str, ...]:
    """The background phrases, in a stable order."""
    import yaml

    try:
        root = resources.files(CORPUS_PACKAGE) / "data" / "english"
        files = sorted((f for f in root.iterdir() if f.name.endswith(".yml")), key=lambda f: f.name)
    except (ModuleNotFoundError, FileNotFoundError):
        raise EngineUnavailable(
            "the domain classifier's background phrases come from chatterbot-corpus, which is not "
            "installed: pip install 'quorum[semantic]'"
        ) from None
    texts: set[str] = set()
    for file in files:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        for conversation in data.get("conversations") or []:
            if conversation and isinstance(conversation[0], str):
                text = conversation[0].strip()
                if text and len(text) < _MAX_CHARS:
                    texts.add(text)
    own = resources.files("extproc.semantic") / "data" / "background.txt"
    for line in own.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            texts.add(line.strip())
    return tuple(sorted(texts))
