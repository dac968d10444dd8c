"""OpenAI's own Python client against miLLM's /v1, unchanged: list the models, a completion, a
chat, a streamed chat with usage, and two errors. Prints what it saw as JSON.

    python openai_client.py http://127.0.0.1:PORT MODEL
"""
import json
import sys

from openai import BadRequestError, NotFoundError, OpenAI

base, model = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
messages = [{"role": "user", "content": "Hello there"}]
seen = {"models": [m.id for m in client.models.list().data]}

done = client.completions.create(model=model, prompt="the load", max_tokens=5, temperature=0)
seen["completion"] = {
    "text": done.choices[0].text,
    "finish": done.choices[0].finish_reason,
    "usage": done.usage.model_dump(),
}

chat = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
seen["chat"] = {
    "content": chat.choices[0].message.content,
    "finish": chat.choices[0].finish_reason,
    "usage": chat.usage.model_dump(),
}

parts, usage, finish = [], None, None
for chunk in client.chat.completions.create(
    model=model,
    messages=messages,
    max_tokens=8,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.usage is not None:
        usage = chunk.usage.model_dump()
    for choice in chunk.choices:
        if choice.delta.content:
            parts.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
seen["stream"] = {"content": "".join(parts), "finish": finish, "usage": usage}

# Embeddings: the client asks for base64 by default and decodes it; floats on request.
packed = client.embeddings.create(model=model, input=["Hello there", "Bye"])
floats = client.embeddings.create(model=model, input="Hello there", encoding_format="float")
seen["embeddings"] = {
    "count": len(packed.data),
    "indexes": [d.index for d in packed.data],
    "dims": len(packed.data[0].embedding),
    "same_as_floats": packed.data[0].embedding == floats.data[0].embedding,
    "usage": packed.usage.model_dump(),
}

try:
    client.chat.completions.create(model="no-such-model", messages=messages)
except NotFoundError as e:
    seen["not_found"] = {"status": e.status_code, "code": e.code}
try:
    client.chat.completions.create(model=model, messages=messages, n=2)
except BadRequestError as e:
    seen["bad_request"] = {"status": e.status_code, "param": e.param}

print(json.dumps(seen))
