//! The page's client of the OpenAI-compatible `/v1` API: a streamed chat completion read with
//! fetch (so an AbortController can end it: the server stops a generation whose client goes),
//! its server-sent events parsed as they arrive. `/v1` errors come in OpenAI's shape,
//! `{"error": {message, type, param, code}}`, as the HTTP answer or as a chunk mid-stream;
//! both are thrown as `ApiError`.
import { ApiError } from "./api-client";
import { getApiKey, notifyApiKeyNeeded } from "./api-key";
import { createSseParser } from "./sse";

/** One message of a chat. */
export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/** The body of `POST /v1/chat/completions` this page sends (always streamed). */
export interface ChatCompletionRequest {
  /** The model's `name`. */
  model: string;
  messages: ChatMessage[];
  temperature?: number;
  max_tokens?: number;
}

/** Token counts of the answer (the last chunk, with `stream_options.include_usage`). */
export interface ChatUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens?: number;
}

/** What the stream reports, as it arrives. */
export interface ChatStreamHandlers {
  /** A piece of the answer's text (never empty). */
  onContent: (text: string) => void;
  /** Why the answer ended: `stop` (end of sequence or a stop string) or `length` (max tokens). */
  onFinish?: (reason: string) => void;
  onUsage?: (usage: ChatUsage) => void;
}

/** OpenAI's error object. */
interface OpenAiErrorBody {
  message?: string;
  type?: string;
  param?: string | null;
  code?: string | null;
}

function openAiError(payload: unknown): OpenAiErrorBody | null {
  if (typeof payload !== "object" || payload === null || !("error" in payload)) return null;
  const error = (payload as { error: unknown }).error;
  return typeof error === "object" && error !== null ? (error as OpenAiErrorBody) : null;
}

/** An OpenAI error as `ApiError`: its `code` (else its `type`), message, and `type`/`param` as details. */
function toApiError(error: OpenAiErrorBody, status: number): ApiError {
  return new ApiError(
    error.code || error.type || "server_error",
    error.message || `The request failed with status ${status}.`,
    { type: error.type ?? null, param: error.param ?? null },
    status,
  );
}

function resolve(path: string): string {
  const origin = typeof window !== "undefined" && window.location ? window.location.origin : "http://localhost";
  return new URL(path, origin).toString();
}

/**
 * Sends a chat and streams its answer into `handlers`. Resolves when the stream ends
 * (`data: [DONE]`); throws `ApiError` for an HTTP or mid-stream error, and the fetch's
 * `AbortError` when `signal` aborts it.
 */
export async function streamChatCompletion(request: ChatCompletionRequest, handlers: ChatStreamHandlers, signal?: AbortSignal): Promise<void> {
  const headers: Record<string, string> = { "Content-Type": "application/json", Accept: "text/event-stream" };
  const key = getApiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  const body = { ...request, stream: true, stream_options: { include_usage: true } };

  let response: Response;
  try {
    response = await fetch(resolve("/v1/chat/completions"), { method: "POST", headers, body: JSON.stringify(body), signal });
  } catch (error) {
    if (signal?.aborted) throw error;
    throw new ApiError("NETWORK_ERROR", "Cannot reach the miLLM server. Check that it is running.", null, 0);
  }

  if (!response.ok || !response.body) {
    const text = await response.text().catch(() => "");
    let payload: unknown = null;
    try {
      payload = text ? JSON.parse(text) : null;
    } catch {
      payload = null;
    }
    if (response.status === 401) notifyApiKeyNeeded();
    const error = openAiError(payload);
    if (error) throw toApiError(error, response.status);
    // The /api envelope (an auth or Host refusal from the shared guards).
    const envelopeError = (payload as { error?: { code?: string; message?: string } } | null)?.error;
    if (envelopeError?.message) throw new ApiError(envelopeError.code ?? "HTTP_ERROR", envelopeError.message, null, response.status);
    throw new ApiError("HTTP_ERROR", `The request failed with status ${response.status}.`, null, response.status);
  }

  let done = false;
  let failure: ApiError | null = null;
  const parser = createSseParser(({ data }) => {
    if (done || failure) return;
    if (data === "[DONE]") {
      done = true;
      return;
    }
    let chunk: unknown;
    try {
      chunk = JSON.parse(data);
    } catch {
      return; // not JSON: nothing this page can show
    }
    const error = openAiError(chunk);
    if (error) {
      failure = toApiError(error, response.status);
      return;
    }
    const { choices, usage } = chunk as {
      choices?: { delta?: { content?: string | null }; finish_reason?: string | null }[];
      usage?: ChatUsage | null;
    };
    for (const choice of choices ?? []) {
      const content = choice.delta?.content;
      if (content) handlers.onContent(content);
      if (choice.finish_reason) handlers.onFinish?.(choice.finish_reason);
    }
    if (usage) handlers.onUsage?.(usage);
  });

  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  // The fetch's abort also ends a read that is waiting for the next chunk.
  const onAbort = () => void reader.cancel().catch(() => {});
  signal?.addEventListener("abort", onAbort);
  try {
    while (!done && !failure && !signal?.aborted) {
      const { value, done: ended } = await reader.read();
      if (ended) break;
      parser.feed(decoder.decode(value, { stream: true }));
    }
    parser.feed(decoder.decode());
  } finally {
    signal?.removeEventListener("abort", onAbort);
    // After [DONE] or an error there is nothing more to read: let the connection go.
    if (done || failure) void reader.cancel().catch(() => {});
  }
  if (signal?.aborted) throw new DOMException("The answer was stopped.", "AbortError");
  if (failure) throw failure;
  if (!done) throw new ApiError("STREAM_ENDED", "The answer ended before the server finished it.", null, response.status);
}
