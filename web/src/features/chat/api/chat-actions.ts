//! The chat feature's requests: send the conversation to `POST /v1/chat/completions`, stream
//! the answer into the store while timing it, and stop it (aborting the fetch closes the
//! connection, and the server stops a generation whose client is gone).
import { ApiError, errorMessage } from "@/lib/api-client";
import { streamChatCompletion, type ChatCompletionRequest } from "@/lib/openai-client";
import { useChatStore } from "../stores/chat-store";
import type { AnswerStats, ChatMessage, ChatSettings, ChatTurn } from "../types";

const store = () => useChatStore.getState();

/** The request in flight, so Stop can abort it. */
let running: AbortController | null = null;

/** Temperature the server accepts (OpenAI's range). */
export const TEMPERATURE_RANGE = { min: 0, max: 2 } as const;
/** A bound on max tokens the field accepts (the server refuses what exceeds the context). */
export const MAX_TOKENS_LIMIT = 1_000_000;

/** The settings as the request takes them, or what is wrong with each field. */
export function parseSettings(settings: ChatSettings): {
  temperature?: number;
  maxTokens?: number;
  errors: Partial<Record<"temperature" | "maxTokens", string>>;
} {
  const errors: Partial<Record<"temperature" | "maxTokens", string>> = {};
  let temperature: number | undefined;
  let maxTokens: number | undefined;
  if (settings.temperature.trim() !== "") {
    const t = Number(settings.temperature);
    if (!Number.isFinite(t) || t < TEMPERATURE_RANGE.min || t > TEMPERATURE_RANGE.max) {
      errors.temperature = `A number from ${TEMPERATURE_RANGE.min} to ${TEMPERATURE_RANGE.max}.`;
    } else temperature = t;
  }
  if (settings.maxTokens.trim() !== "") {
    const m = Number(settings.maxTokens);
    if (!Number.isInteger(m) || m < 1 || m > MAX_TOKENS_LIMIT) errors.maxTokens = "A whole number of at least 1.";
    else maxTokens = m;
  }
  return { temperature, maxTokens, errors };
}

/** The messages to send: the system prompt, then every question and every answer that has text. */
export function historyOf(turns: ChatTurn[], systemPrompt: string): ChatMessage[] {
  const messages: ChatMessage[] = [];
  if (systemPrompt.trim()) messages.push({ role: "system", content: systemPrompt });
  for (const turn of turns) {
    if (turn.role === "assistant" && (turn.state === "error" || turn.content === "")) continue;
    messages.push({ role: turn.role, content: turn.content });
  }
  // A question whose answer failed is followed by the next question: keep only the last one.
  return messages.filter((m, i) => !(m.role === "user" && messages[i + 1]?.role === "user"));
}

/** Completion tokens over the time from the first to the last chunk; null when they came at once. */
export function tokensPerSecond(tokens: number | null, firstAt: number | null, lastAt: number | null): number | null {
  if (tokens === null || firstAt === null || lastAt === null) return null;
  const seconds = (lastAt - firstAt) / 1000;
  if (seconds <= 0 || tokens < 1) return null;
  return tokens / seconds;
}

/**
 * Asks `model` (its `name`) the question, with the conversation so far; resolves when the answer
 * is done, stopped or failed. Returns false when a field is invalid or an answer is streaming.
 */
export async function sendMessage(model: string, question: string, onAnswered?: () => void): Promise<boolean> {
  const { settings, turns, streaming } = store();
  if (streaming || question.trim() === "") return false;
  const parsed = parseSettings(settings);
  if (Object.keys(parsed.errors).length > 0) return false;

  const messages = historyOf([...turns, { id: 0, role: "user", content: question, state: "done" }], settings.systemPrompt);
  const request: ChatCompletionRequest = { model, messages };
  if (parsed.temperature !== undefined) request.temperature = parsed.temperature;
  if (parsed.maxTokens !== undefined) request.max_tokens = parsed.maxTokens;

  const { answerId } = store().ask(question);
  const controller = new AbortController();
  running = controller;
  const sentAt = performance.now();
  let firstAt: number | null = null;
  let lastAt: number | null = null;
  let pieces = 0;
  let usageTokens: number | null = null;
  let finishReason: string | undefined;
  const stats = (): AnswerStats => {
    const tokens = usageTokens ?? (pieces > 0 ? pieces : null);
    return {
      ttftMs: firstAt === null ? null : firstAt - sentAt,
      tokensPerSecond: tokensPerSecond(tokens, firstAt, lastAt),
      completionTokens: tokens,
      approximate: usageTokens === null,
    };
  };

  try {
    await streamChatCompletion(
      request,
      {
        onContent: (text) => {
          const now = performance.now();
          firstAt ??= now;
          lastAt = now;
          pieces += 1;
          store().appendAnswer(answerId, text);
        },
        onFinish: (reason) => {
          finishReason = reason;
        },
        onUsage: (usage) => {
          // The usage chunk is the stream's last.
          if (firstAt !== null) lastAt = performance.now();
          usageTokens = usage.completion_tokens;
        },
      },
      controller.signal,
    );
    store().endAnswer(answerId, { state: "done", finishReason });
    store().setStats(stats());
  } catch (error) {
    if (controller.signal.aborted) {
      store().endAnswer(answerId, { state: "stopped" });
      if (firstAt !== null) store().setStats(stats());
    } else {
      store().endAnswer(answerId, { state: "error", error: errorMessage(error) });
      if (!(error instanceof ApiError) || error.code !== "NETWORK_ERROR") onAnswered?.();
      return true;
    }
  } finally {
    if (running === controller) running = null;
  }
  onAnswered?.();
  return true;
}

/** Stops the answer being streamed (no-op when none is). */
export function stopAnswer(): void {
  running?.abort();
}

/** Stops any answer and forgets the conversation. */
export function clearChat(): void {
  stopAnswer();
  store().clear();
}

/** Holds the conversation with `modelId`: another model starts a new one (stopping any answer). */
export function holdConversationWith(modelId: number): void {
  if (store().modelId !== modelId) stopAnswer();
  store().forModel(modelId);
}
