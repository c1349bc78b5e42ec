"""OpenAI's API on a decoder-only model (a tiny Llama with a BOS-adding tokenizer and a Llama-2
chat template, built here): the official `openai` client gets what transformers' `generate`
gives, for completions (whole and streamed) and for chat completions rendered with the
checkpoint's template. The same model summarizes on `/v1/summarize` through its prompt
(service/prompts.py), with its chat template or, in a copy without one, as plain text."""

from __future__ import annotations

import json
import shutil

import openai
import pytest
import torch
import transformers

from export.cli import main as export_main
from service.prompts import DEFAULT_CHAT_PROMPT
from tests import hf_builders
from tests.http_server import running

KEY = "openai-decoder-secret"
PROMPTS = hf_builders.prompts(4)
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """(HF checkpoint dir, model repository with it as `llama`, and a copy as `llama-plain`)."""
    root = tmp_path_factory.mktemp("openai-llama")
    hf_dir = hf_builders.llama(root / "hf")
    repo = root / "repo"
    assert (
        export_main(["--from-hf", str(hf_dir), "--name", "llama", "--task", "generate", "--out-repo", str(repo)]) == 0
    )
    plain = shutil.copytree(repo / "llama", repo / "llama-plain")  # no chat template, its own summary prompt
    manifest = json.loads((plain / "manifest.json").read_text())
    manifest |= {"name": "llama-plain", "chat": None, "summarize_prompt": "{text}\nIn short:"}
    (plain / "manifest.json").write_text(json.dumps(manifest))
    return hf_dir, repo


@pytest.fixture(scope="module")
def server(llama, tmp_path_factory):
    _, repo = llama
    with running(repo, tmp_path_factory.mktemp("logs") / "openai-decoder.log", HEED_API_KEYS=KEY) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(api_key=KEY, base_url=f"{server.url}/v1", max_retries=0, timeout=60) as c:
        yield c


def continuation(hf_dir, prompt_ids: list[int]) -> str:
    """transformers' greedy continuation of `prompt_ids`, as text that follows the prompt's text."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir)).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), do_sample=False, max_new_tokens=MAX_TOKENS)[0].tolist()
    whole = tokenizer.decode(out, skip_special_tokens=True)
    prompt = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    assert whole.startswith(prompt)
    return whole[len(prompt) :]


def test_completions_are_transformers_greedy_continuations(client, llama):
    hf_dir, _ = llama
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    want = [continuation(hf_dir, tokenizer(p).input_ids) for p in PROMPTS]  # with BOS, as the tokenizer adds it
    done = client.completions.create(model="llama", prompt=PROMPTS, temperature=0, max_tokens=MAX_TOKENS)
    assert [c.text for c in done.choices] == want and any(want)
    for prompt, text in zip(PROMPTS, want, strict=True):
        stream = client.completions.create(
            model="llama", prompt=prompt, temperature=0, max_tokens=MAX_TOKENS, stream=True
        )
        assert "".join(chunk.choices[0].text for chunk in stream) == text


def test_chat_is_the_templates_prompt_continued(client, llama):
    hf_dir, _ = llama
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPTS[1]}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id  # one BOS: the template's
    want = continuation(hf_dir, ids)
    done = client.chat.completions.create(model="llama", messages=messages, temperature=0, max_tokens=MAX_TOKENS)
    assert done.choices[0].message.content == want
    assert done.usage.prompt_tokens == len(ids)
    stream = client.chat.completions.create(
        model="llama", messages=messages, temperature=0, max_tokens=MAX_TOKENS, stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == want


def test_the_models_are_listed(client):
    assert [m.id for m in client.models.list()] == ["llama", "llama-plain"]


def test_a_decoder_only_model_summarizes_through_its_prompt(server, llama):
    hf_dir, _ = llama
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    text = PROMPTS[2]
    chat = [{"role": "user", "content": DEFAULT_CHAT_PROMPT.replace("{text}", text)}]
    chat_ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=False)
    plain_ids = tokenizer(f"{text}\nIn short:").input_ids
    headers = {"Authorization": f"Bearer {KEY}"}
    for model, ids in (("llama", chat_ids), ("llama-plain", plain_ids)):
        body = {"model": model, "text": text, "max_new_tokens": MAX_TOKENS}
        r = server.client.post("/v1/summarize", json=body, headers=headers)
        assert r.status_code == 200, r.text
        [summary] = r.json()["summaries"]
        assert summary["text"] == continuation(hf_dir, ids) and summary["input_tokens"] == len(ids), model
