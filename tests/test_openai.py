"""OpenAI's API over real HTTP, driven by the official `openai` client, on heed's default models
behind an API key: a translation model completes a prompt with its translation, and a copy of it
with a chat template answers chat completions (the decoder-only models' tests are
tests/test_openai_decoder.py)."""

from __future__ import annotations

import json
import shutil

import httpx
import openai
import pytest

from tests.http_server import running

KEY = "openai-secret"
TEXTS = ["one hundred and twenty-three", "four thousand five hundred"]
# a template as checkpoints write them: roles checked with raise_exception, the last user message,
# and the special tokens the tokenizer would add (a rendered template holds them, as in transformers)
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + m['role']) }}{% endif %}{% endfor %}"
    "{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | list | last }}{{ eos_token }}"
)


@pytest.fixture(scope="module")
def server(default_repo, tmp_path_factory):
    repo = tmp_path_factory.mktemp("openai-models")
    shutil.copytree(default_repo / "heed-numbers", repo / "heed-numbers")
    chat = shutil.copytree(default_repo / "heed-numbers", repo / "numbers-chat")
    manifest = json.loads((chat / "manifest.json").read_text())
    manifest |= {"name": "numbers-chat", "chat": {"template": CHAT_TEMPLATE, "tokens": {"eos_token": "</s>"}}}
    (chat / "manifest.json").write_text(json.dumps(manifest))
    with running(repo, tmp_path_factory.mktemp("logs") / "openai.log", HEED_API_KEYS=KEY) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(api_key=KEY, base_url=f"{server.url}/v1", max_retries=0, timeout=60) as c:
        yield c


def native(server, texts: list[str], target: str = "de", **options) -> list[dict]:
    body = {"model": "heed-numbers", "text": texts, "target_lang": target, "split_sentences": False} | options
    r = server.client.post("/v1/translate", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200, r.text
    return r.json()["translations"]


def test_models_are_listed_and_retrieved_as_openai_models(client):
    assert [m.id for m in client.models.list()] == ["heed-numbers", "numbers-chat"]
    model = client.models.retrieve("heed-numbers")
    assert model.id == "heed-numbers" and model.object == "model" and model.owned_by == "heed" and model.created > 0
    with pytest.raises(openai.NotFoundError, match="unknown model"):
        client.models.retrieve("gpt-4o")


def test_a_translation_model_completes_prompts_with_their_translations(client, server):
    want = native(server, TEXTS, target="fr")
    done = client.completions.create(
        model="heed-numbers", prompt=TEXTS, temperature=0, extra_body={"target_lang": "fr"}
    )
    assert [c.text for c in done.choices] == [t["text"] for t in want]
    assert [c.index for c in done.choices] == [0, 1] and {c.finish_reason for c in done.choices} == {"stop"}
    assert done.object == "text_completion" and done.model == "heed-numbers" and done.id.startswith("cmpl-")
    assert done.usage.prompt_tokens == sum(t["input_tokens"] for t in want)
    assert done.usage.completion_tokens == sum(t["output_tokens"] for t in want)
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens


def test_streamed_choices_are_the_whole_answers_cut_in_tokens(client):
    whole = client.completions.create(model="heed-numbers", prompt=TEXTS, n=2, seed=7, temperature=0.9, max_tokens=12)
    assert [c.index for c in whole.choices] == [0, 1, 2, 3]
    texts: dict[int, str] = {}
    reasons: dict[int, str] = {}
    usage = None
    stream = client.completions.create(
        model="heed-numbers",
        prompt=TEXTS,
        n=2,
        seed=7,
        temperature=0.9,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
        usage = chunk.usage or usage
    assert texts == {c.index: c.text for c in whole.choices}
    assert reasons == {c.index: c.finish_reason for c in whole.choices}
    assert (usage.prompt_tokens, usage.completion_tokens) == (whole.usage.prompt_tokens, whole.usage.completion_tokens)


def test_choices_with_a_seed_are_reproducible_and_greedy_ones_equal(client):
    def choices(**options) -> list[str]:
        done = client.completions.create(
            model="heed-numbers", prompt="seven zebras ate ninety bananas", n=6, max_tokens=10, **options
        )
        return [c.text for c in done.choices]

    sampled = choices(temperature=2, seed=3)  # not a number: the model is unsure
    assert sampled == choices(temperature=2, seed=3) and len(set(sampled)) > 1
    assert len(set(choices(temperature=0))) == 1


def test_echo_stop_and_max_tokens(client, server):
    [want] = native(server, TEXTS[:1])
    echoed = client.completions.create(model="heed-numbers", prompt=TEXTS[0], temperature=0, echo=True)
    assert echoed.choices[0].text == TEXTS[0] + want["text"]
    cut = client.completions.create(model="heed-numbers", prompt=TEXTS[0], temperature=0, max_tokens=2)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 2
    stop = want["text"][3:6]
    stopped = client.completions.create(model="heed-numbers", prompt=TEXTS[0], temperature=0, stop=stop)
    assert (
        stopped.choices[0].text == want["text"][: want["text"].index(stop)]
        and stopped.choices[0].finish_reason == "stop"
    )


def test_chat_completions_render_the_models_template(client, server):
    messages = [{"role": "system", "content": "You translate."}, {"role": "user", "content": TEXTS[1]}]
    [want] = native(server, TEXTS[1:])
    done = client.chat.completions.create(model="numbers-chat", messages=messages, temperature=0)
    assert done.choices[0].message.role == "assistant" and done.choices[0].message.content == want["text"]
    assert done.object == "chat.completion" and done.id.startswith("chatcmpl-")
    parts = [{"role": "user", "content": [{"type": "text", "text": TEXTS[1]}]}]
    streamed = client.chat.completions.create(model="numbers-chat", messages=parts, temperature=0, stream=True)
    chunks = list(streamed)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want["text"]


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        ({"model": "gpt-4o"}, openai.NotFoundError, "unknown model"),
        ({"presence_penalty": 0.5}, openai.BadRequestError, "'presence_penalty' is not supported"),
        ({"logit_bias": {"5": 1.0}}, openai.BadRequestError, "'logit_bias' is not supported"),
        ({"logprobs": 2}, openai.BadRequestError, "'logprobs' is not supported"),
        ({"prompt": [[1, 2, 3]]}, openai.BadRequestError, "token ids are not supported"),
        ({"prompt": "one " * 300}, openai.BadRequestError, "tokens; this model takes at most"),
        ({"max_tokens": 10**6}, openai.BadRequestError, "over this model's limit"),
        ({"n": 40}, openai.BadRequestError, "n"),
        ({"extra_body": {"target_lang": "ja"}}, openai.BadRequestError, "target_lang 'ja'"),
        ({"extra_body": {"top_k": -1}}, openai.BadRequestError, "top_k"),
    ],
)
def test_bad_completions_are_openai_errors(client, call, error, words):
    with pytest.raises(error, match=words) as raised:
        client.completions.create(**({"model": "heed-numbers", "prompt": TEXTS[0]} | call))
    body = raised.value.body
    assert set(body) >= {"message", "type", "param", "code"} and raised.value.request_id


def test_chat_errors(client):
    with pytest.raises(openai.BadRequestError, match="has no chat template"):
        client.chat.completions.create(model="heed-numbers", messages=[{"role": "user", "content": "one"}])
    with pytest.raises(openai.BadRequestError, match="unknown role tool"):
        client.chat.completions.create(
            model="numbers-chat", messages=[{"role": "tool", "content": "1", "tool_call_id": "x"}]
        )
    with pytest.raises(openai.BadRequestError, match="'tools' is not supported"):
        client.chat.completions.create(
            model="numbers-chat",
            messages=[{"role": "user", "content": "one"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        )
    with pytest.raises(openai.BadRequestError, match="image_url is not supported"):
        image = {"type": "image_url", "image_url": {"url": "data:,"}}
        client.chat.completions.create(model="numbers-chat", messages=[{"role": "user", "content": [image]}])


def test_a_wrong_key_is_the_clients_authentication_error(server):
    with (
        openai.OpenAI(api_key="wrong", base_url=f"{server.url}/v1", max_retries=0) as c,
        pytest.raises(openai.AuthenticationError),
    ):
        c.completions.create(model="heed-numbers", prompt="one")


def test_requests_are_counted_under_their_route(server):
    labels = {"model": "heed-numbers", "route": "/v1/completions", "status": "200"}
    before = server.sample("heed_requests_total", **labels)
    body = {"model": "heed-numbers", "prompt": "two", "max_tokens": 3}
    r = httpx.post(f"{server.url}/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200, r.text
    assert server.sample("heed_requests_total", **labels) == before + 1


def test_the_stream_is_server_sent_events_ending_with_done(server):
    body = {"model": "heed-numbers", "prompt": TEXTS[0], "stream": True, "max_tokens": 4}
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, headers=headers, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"} and chunks[-1]["choices"][0][
        "finish_reason"
    ] == "length"
