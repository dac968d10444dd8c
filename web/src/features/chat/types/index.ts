//! Types of the chat feature: the turns of a conversation, its settings, and the figures of
//! the last answer.
export type { ChatMessage, ChatUsage } from "@/lib/openai-client";
export type { ModelResponse } from "@/lib/api-types";

/** Where an answer stands. */
export type AnswerState = "streaming" | "done" | "stopped" | "error";

/** One turn of the conversation shown in the panel. */
export interface ChatTurn {
  id: number;
  role: "user" | "assistant";
  content: string;
  /** An answer's state; a question is always `done`. */
  state: AnswerState;
  /** Why the answer failed (the server's message). */
  error?: string;
  /** `stop` or `length`, as the server ended the answer. */
  finishReason?: string;
}

/** What the user sets for the next answers (kept as typed; parsed when sending). */
export interface ChatSettings {
  systemPrompt: string;
  temperature: string;
  maxTokens: string;
}

/** Figures of the last answer, measured in the page. */
export interface AnswerStats {
  /** Milliseconds from sending to the first piece of text. */
  ttftMs: number | null;
  /** Completion tokens per second between the first and the last piece. */
  tokensPerSecond: number | null;
  /** Tokens the answer took (from the server's usage, else the pieces counted). */
  completionTokens: number | null;
  /** True when the server sent no usage (a stopped answer): the pieces were counted instead. */
  approximate: boolean;
}
