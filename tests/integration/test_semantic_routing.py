"""Domain routing through a real Envoy with the official openai SDK, on held-out prompts.

The config declares the seven domains of tests/data/domains/examples.yaml (4 examples each, no
threshold or margin: the calibrated defaults) and one decision per domain. The prompts are the
first on-topic prompt of each domain and the first off-topic ones of the held-out TEST split
(taken in file order, not picked), sent to `quorum/auto`. Three stacks: the default domain model
(multilingual-e5-small), the static wordllama-l2-supercat as the domain model, and the cascade
(wordllama first, e5 when it is unsure: every off-topic prompt falls through to e5).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import yaml

from extproc.dev.stack import Stack, free_port

pytestmark = pytest.mark.integration
pytest.importorskip("onnxruntime", reason="semantic signals need the semantic extra")

DATA = Path(__file__).resolve().parents[1] / "data" / "domains"
EXAMPLES: dict[str, list[str]] = yaml.safe_load((DATA / "examples.yaml").read_text(encoding="utf-8"))
TEST = yaml.safe_load((DATA / "test.yaml").read_text(encoding="utf-8"))
FIRST_ON_TOPIC = {domain: next(t["text"] for t in TEST["on_topic"] if t["domain"] == domain) for domain in EXAMPLES}
FIRST_OFF_TOPIC = TEST["off_topic"][:3]


EMBEDDING = {
    "default": {},
    "static": {"domain_model": "wordllama-l2-supercat"},
    "cascade": {"domain_first_stage": "wordllama-l2-supercat"},
}


@pytest.fixture(scope="module", params=list(EMBEDDING))
def domain_stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp(f"domains-{request.param}")
    models = ["general", *EXAMPLES]
    config = {
        "version": "v1",
        "server": {"listen": f"127.0.0.1:{free_port()}", "workers": 1, "grace_period": "1s"},
        "envoy": {"listen": f"127.0.0.1:{free_port()}", "admin": f"127.0.0.1:{free_port()}"},
        # its own metrics port: the default 9190 may be taken by another stack on this machine
        "observability": {"debug_headers": True, "metrics": {"listen": f"127.0.0.1:{free_port()}"}},
        "providers": {
            "defaults": {"default_model": "general"},
            "models": [{"name": m, "base_url": f"http://127.0.0.1:{free_port()}/v1"} for m in models],
        },
        "routing": {
            "embedding": EMBEDDING[request.param],
            "signals": {"domain": [{"name": name, "examples": texts} for name, texts in EXAMPLES.items()]},
            "decisions": [
                {
                    "name": name,
                    "priority": 100,
                    "rules": {"type": "domain", "name": name},
                    "modelRefs": [{"model": name}],
                }
                for name in EXAMPLES
            ],
        },
    }
    path = workdir / "quorum.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    # A longer start than the shared stacks': quorum loads e5 and calibrates before it listens, and the
    # machine running the suite may be busy.
    stack = Stack(path, workdir).start(timeout=90)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def domain_client(domain_stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{domain_stack.envoy_url}/v1", api_key="k", max_retries=0, timeout=30)


def ask(client: openai.OpenAI, text: str) -> tuple[dict[str, str], str]:
    raw = client.chat.completions.with_raw_response.create(
        model="quorum/auto", messages=[{"role": "user", "content": text}]
    )
    return dict(raw.headers), raw.parse().choices[0].message.content or ""


@pytest.mark.parametrize(("domain", "text"), list(FIRST_ON_TOPIC.items()), ids=list(FIRST_ON_TOPIC))
def test_heldout_prompt_reaches_its_domain(domain_client: openai.OpenAI, domain: str, text: str) -> None:
    headers, content = ask(domain_client, text)
    assert headers["x-quorum-decision"] == domain, headers
    assert headers["x-fake-backend"] == domain  # the request really reached that backend
    assert content == f"[{domain}] {text}"
    assert 0.0 < float(headers["x-quorum-confidence"]) <= 1.0


@pytest.mark.parametrize("text", FIRST_OFF_TOPIC)
def test_heldout_off_topic_prompt_goes_to_the_default_model(domain_client: openai.OpenAI, text: str) -> None:
    headers, _ = ask(domain_client, text)
    assert headers["x-quorum-decision"] == "default", headers
    assert headers["x-fake-backend"] == "general"
