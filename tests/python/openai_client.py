"""The official `openai` Python client against a running `ragmap serve`.

Run by tests/openai_client.rs with the cached venv's python (scripts/test
installs the pinned client). Arguments: the served URL, its API key, and the
URL of a second server whose upstream model is down. Asserts as it goes and
prints one JSON object describing what the client saw, for the Rust side to
check too.
"""

import json
import sys

import openai

QUESTION = "How does LoRA fine-tune a model?"


def client(url, key):
    # No retries: a retried request would hide the status the server sent.
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


def status_of(call):
    try:
        call()
    except openai.APIStatusError as e:
        return {"status": e.status_code, "type": type(e).__name__, "body": e.body}
    raise AssertionError("the call succeeded; an error status was expected")


def main():
    url, key, broken_url = sys.argv[1:4]
    good = client(url, key)
    seen = {"client_version": openai.__version__}

    seen["models"] = [m.id for m in good.models.list().data]

    whole = good.chat.completions.create(
        model="ragmap", messages=[{"role": "user", "content": QUESTION}]
    )
    extra = whole.model_extra or {}
    seen["whole"] = {
        "content": whole.choices[0].message.content,
        "finish_reason": whole.choices[0].finish_reason,
        "sources": extra.get("sources"),
    }

    pieces, last = [], None
    stream = good.chat.completions.create(
        model="ragmap",
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
    )
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
        last = chunk
    assert last is not None, "the stream carried no chunk"
    seen["stream"] = {
        "pieces": pieces,
        "finish_reason": last.choices[0].finish_reason if last.choices else None,
        "sources": (last.model_extra or {}).get("sources"),
    }

    embedded = good.embeddings.create(model="ragmap", input=["LoRA", "低秩适配微调"])
    # The client asks for base64 by default; the float form must be the same vectors.
    as_floats = good.embeddings.create(
        model="ragmap", input=["LoRA", "低秩适配微调"], encoding_format="float"
    )
    for a, b in zip(embedded.data, as_floats.data):
        assert max(abs(x - y) for x, y in zip(a.embedding, b.embedding)) < 1e-6
    seen["embeddings"] = {
        "count": len(embedded.data),
        "dims": sorted({len(d.embedding) for d in embedded.data}),
        "indices": [d.index for d in embedded.data],
    }

    seen["errors"] = {
        "no_messages": status_of(
            lambda: good.chat.completions.create(model="ragmap", messages=[])
        ),
        "wrong_key": status_of(lambda: client(url, "not-the-key").models.list()),
        "too_large": status_of(
            lambda: good.chat.completions.create(
                model="ragmap",
                messages=[{"role": "user", "content": "x" * (64 * 1024)}],
            )
        ),
        "upstream_down": status_of(
            lambda: client(broken_url, key).chat.completions.create(
                model="ragmap", messages=[{"role": "user", "content": QUESTION}]
            )
        ),
        "upstream_down_streaming": status_of(
            lambda: list(
                client(broken_url, key).chat.completions.create(
                    model="ragmap",
                    messages=[{"role": "user", "content": QUESTION}],
                    stream=True,
                )
            )
        ),
    }
    print(json.dumps(seen, ensure_ascii=False))


if __name__ == "__main__":
    main()
