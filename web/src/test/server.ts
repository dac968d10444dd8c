//! The MSW server for tests and envelope helpers for handlers.
import { HttpResponse } from "msw";
import { setupServer } from "msw/node";

export const server = setupServer();

/** A success envelope. */
export function ok<T>(data: T, status = 200) {
  return HttpResponse.json({ success: true, data, error: null }, { status });
}

/** A failure envelope. */
export function fail(code: string, message: string, status: number, details: Record<string, unknown> = {}) {
  return HttpResponse.json({ success: false, data: null, error: { code, message, details } }, { status });
}

/** An OpenAI error body (`/v1` errors are not enveloped). */
export function openAiFail(message: string, type: string, code: string | null, status: number) {
  return HttpResponse.json({ error: { message, type, param: null, code } }, { status });
}

/** A server-sent event stream a test writes to: `send` a JSON chunk or raw data, then `end`. */
export function sseStream() {
  const encoder = new TextEncoder();
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let closed = false;
  let cancelled = false;
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
    },
    cancel() {
      closed = true;
      cancelled = true;
    },
  });
  const write = (text: string) => {
    if (!closed) controller.enqueue(encoder.encode(text));
  };
  return {
    response: () => new HttpResponse(stream, { headers: { "Content-Type": "text/event-stream" } }),
    /** Writes raw text (to split an event across reads). */
    write,
    /** One `data:` event: an object as JSON, a string as it is. */
    send: (data: unknown) => write(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`),
    end: () => {
      if (!closed) controller.close();
      closed = true;
    },
    /** True once the reader cancelled the stream (the page stopped reading). */
    get cancelled() {
      return cancelled;
    },
  };
}

/** A `chat.completion.chunk` carrying `content` (and a finish reason or usage). */
export function chatChunk(content: string | null, extra: { finish?: string; usage?: { prompt_tokens: number; completion_tokens: number } } = {}) {
  return {
    id: "chatcmpl-1",
    object: "chat.completion.chunk",
    created: 1,
    model: "tiny-llama",
    choices: extra.usage ? [] : [{ index: 0, delta: content === null ? {} : { content }, finish_reason: extra.finish ?? null }],
    usage: extra.usage ? { ...extra.usage, total_tokens: extra.usage.prompt_tokens + extra.usage.completion_tokens } : null,
  };
}
