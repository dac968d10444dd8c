//! Toast notifications: a queue any module can push to.
import { create } from "zustand";

export type ToastKind = "error" | "success" | "info";

export interface Toast {
  id: number;
  kind: ToastKind;
  title?: string;
  message: string;
}

interface ToastState {
  toasts: Toast[];
  push: (toast: Omit<Toast, "id">) => number;
  dismiss: (id: number) => void;
  reset: () => void;
}

let nextId = 1;

export const useToastStore = create<ToastState>()((set) => ({
  toasts: [],
  push: (toast) => {
    const id = nextId++;
    // Keep the five newest so a burst of errors does not cover the page.
    set((state) => ({ toasts: [...state.toasts, { ...toast, id }].slice(-5) }));
    return id;
  },
  dismiss: (id) => set((state) => ({ toasts: state.toasts.filter((t) => t.id !== id) })),
  reset: () => set({ toasts: [] }),
}));

/** Shorthands for pushing toasts. */
export const toast = {
  error: (message: string, title?: string) => useToastStore.getState().push({ kind: "error", message, title }),
  success: (message: string, title?: string) => useToastStore.getState().push({ kind: "success", message, title }),
  info: (message: string, title?: string) => useToastStore.getState().push({ kind: "info", message, title }),
};
