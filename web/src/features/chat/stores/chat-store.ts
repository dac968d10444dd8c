//! The conversation in the chat panel: its turns (the answer being streamed is the last one),
//! the settings of the next request, and the figures of the last answer. One conversation at
//! a time, with the model it was held with.
import { create } from "zustand";
import type { AnswerStats, ChatSettings, ChatTurn } from "../types";

/** What a new page starts with. */
export const DEFAULT_SETTINGS: ChatSettings = { systemPrompt: "", temperature: "0.7", maxTokens: "512" };

interface ChatState {
  /** The model the conversation is held with (a new model starts a new conversation). */
  modelId: number | null;
  turns: ChatTurn[];
  /** True while an answer streams in. */
  streaming: boolean;
  settings: ChatSettings;
  stats: AnswerStats | null;

  /** Starts afresh when `modelId` is not the conversation's model. */
  forModel: (modelId: number) => void;
  /** Adds the question and an empty answer that is streaming. */
  ask: (question: string) => { answerId: number };
  /** Appends text to the answer being streamed. */
  appendAnswer: (answerId: number, text: string) => void;
  /** Ends an answer (done, stopped or failed). */
  endAnswer: (answerId: number, change: Pick<ChatTurn, "state"> & Partial<Pick<ChatTurn, "error" | "finishReason">>) => void;
  setStats: (stats: AnswerStats | null) => void;
  setSettings: (change: Partial<ChatSettings>) => void;
  /** Forgets the conversation (the settings stay). */
  clear: () => void;
  reset: () => void;
}

let nextId = 1;

const initial = {
  modelId: null as number | null,
  turns: [] as ChatTurn[],
  streaming: false,
  settings: DEFAULT_SETTINGS,
  stats: null as AnswerStats | null,
};

export const useChatStore = create<ChatState>()((set) => ({
  ...initial,

  forModel: (modelId) =>
    set((state) => (state.modelId === modelId ? state : { modelId, turns: [], streaming: false, stats: null })),
  ask: (question) => {
    const answerId = nextId + 1;
    nextId += 2;
    set((state) => ({
      streaming: true,
      turns: [
        ...state.turns,
        { id: answerId - 1, role: "user", content: question, state: "done" },
        { id: answerId, role: "assistant", content: "", state: "streaming" },
      ],
    }));
    return { answerId };
  },
  appendAnswer: (answerId, text) =>
    set((state) => ({ turns: state.turns.map((t) => (t.id === answerId ? { ...t, content: t.content + text } : t)) })),
  endAnswer: (answerId, change) =>
    set((state) => ({
      streaming: state.turns.some((t) => t.id === answerId) ? false : state.streaming,
      turns: state.turns.map((t) => (t.id === answerId ? { ...t, ...change } : t)),
    })),
  setStats: (stats) => set({ stats }),
  setSettings: (change) => set((state) => ({ settings: { ...state.settings, ...change } })),
  clear: () => set({ turns: [], streaming: false, stats: null }),
  reset: () => set({ ...initial }),
}));
