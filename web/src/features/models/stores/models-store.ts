//! The models registry as the page sees it: the list from the API, kept live by
//! socket events (progress is merged into the model; load progress kept aside).
import { create } from "zustand";
import type {
  DownloadProgressEvent,
  LoadProgress,
  LoadProgressEvent,
  ModelErrorEvent,
  ModelResponse,
} from "../types";

interface ModelsState {
  /** Newest first. */
  models: ModelResponse[];
  /** True once the first list arrived. */
  loaded: boolean;
  /** Why the list could not be fetched, if it could not. */
  listError: string | null;
  /** Live load stage per model id. */
  loadProgress: Record<number, LoadProgress>;
  /** Model ids with a request in flight from this page. */
  pending: Record<number, boolean>;
  /**
   * Count of live updates (events, refetches) per model id. An action's HTTP
   * answer that raced with an event is older than what the store holds, so the
   * actions compare this count before and after their request.
   */
  revision: Record<number, number>;

  setModels: (models: ModelResponse[]) => void;
  setListError: (message: string | null) => void;
  upsertModel: (model: ModelResponse) => void;
  removeModel: (id: number) => void;
  setPending: (id: number, pending: boolean) => void;
  /** Records that live news about a model arrived. */
  touch: (id: number) => void;
  applyDownloadProgress: (event: DownloadProgressEvent) => void;
  applyDownloadError: (event: ModelErrorEvent) => void;
  applyLoadProgress: (event: LoadProgressEvent) => void;
  applyLoadComplete: (id: number) => void;
  applyLoadError: (event: ModelErrorEvent) => void;
  applyUnloadComplete: (id: number) => void;
  reset: () => void;
}

const initial = {
  models: [] as ModelResponse[],
  loaded: false,
  listError: null as string | null,
  loadProgress: {} as Record<number, LoadProgress>,
  pending: {} as Record<number, boolean>,
  revision: {} as Record<number, number>,
};

function bump(revision: Record<number, number>, id: number): Record<number, number> {
  return { ...revision, [id]: (revision[id] ?? 0) + 1 };
}

/** Newest first: by creation time, then by id. */
function sortNewestFirst(models: ModelResponse[]): ModelResponse[] {
  return [...models].sort((a, b) => {
    const ta = a.created_at ? Date.parse(a.created_at) : 0;
    const tb = b.created_at ? Date.parse(b.created_at) : 0;
    if (tb !== ta) return tb - ta;
    return b.id - a.id;
  });
}

function patch(models: ModelResponse[], id: number, change: (m: ModelResponse) => ModelResponse): ModelResponse[] {
  return models.map((m) => (m.id === id ? change(m) : m));
}

function without<T>(record: Record<number, T>, id: number): Record<number, T> {
  if (!(id in record)) return record;
  const next = { ...record };
  delete next[id];
  return next;
}

export const useModelsStore = create<ModelsState>()((set) => ({
  ...initial,

  setModels: (models) => set({ models: sortNewestFirst(models), loaded: true, listError: null }),
  setListError: (listError) => set({ listError, loaded: true }),

  upsertModel: (model) =>
    set((state) => {
      const exists = state.models.some((m) => m.id === model.id);
      const models = exists ? patch(state.models, model.id, () => model) : sortNewestFirst([...state.models, model]);
      const loadProgress = model.status === "loading" ? state.loadProgress : without(state.loadProgress, model.id);
      return { models, loadProgress };
    }),

  removeModel: (id) =>
    set((state) => ({
      models: state.models.filter((m) => m.id !== id),
      loadProgress: without(state.loadProgress, id),
      pending: without(state.pending, id),
      revision: bump(state.revision, id),
    })),

  setPending: (id, pending) =>
    set((state) => ({ pending: pending ? { ...state.pending, [id]: true } : without(state.pending, id) })),

  touch: (id) => set((state) => ({ revision: bump(state.revision, id) })),

  applyDownloadProgress: (e) =>
    set((state) => ({
      models: patch(state.models, e.modelId, (m) =>
        // A late progress event must not undo a cancel or a completion.
        m.status !== "downloading"
          ? m
          : {
              ...m,
              download_progress: Math.round(e.progress),
              downloaded_bytes: e.downloadedBytes,
              total_bytes: e.totalBytes,
              speed_bps: e.speedBps,
            },
      ),
    })),

  applyDownloadError: (e) =>
    set((state) => ({
      revision: bump(state.revision, e.modelId),
      models: patch(state.models, e.modelId, (m) => ({
        ...m,
        status: "error",
        error_message: e.error.message,
        speed_bps: null,
      })),
    })),

  applyLoadProgress: (e) =>
    set((state) => ({
      revision: bump(state.revision, e.modelId),
      models: patch(state.models, e.modelId, (m) => (m.status === "ready" || m.status === "error" ? { ...m, status: "loading" } : m)),
      loadProgress: { ...state.loadProgress, [e.modelId]: { stage: e.stage, progress: e.progress } },
    })),

  applyLoadComplete: (id) =>
    set((state) => ({
      revision: bump(state.revision, id),
      // One model is loaded at a time: any other loaded model was unloaded first.
      models: state.models.map((m) =>
        m.id === id ? { ...m, status: "loaded", error_message: null } : m.status === "loaded" ? { ...m, status: "ready" } : m,
      ),
      loadProgress: without(state.loadProgress, id),
    })),

  applyLoadError: (e) =>
    set((state) => ({
      revision: bump(state.revision, e.modelId),
      models: patch(state.models, e.modelId, (m) => ({ ...m, status: "error", error_message: e.error.message })),
      loadProgress: without(state.loadProgress, e.modelId),
    })),

  applyUnloadComplete: (id) =>
    set((state) => ({
      revision: bump(state.revision, id),
      models: patch(state.models, id, (m) =>
        m.status === "loaded" ? { ...m, status: "ready", memory_footprint: null, device: null, dtype: null, num_parameters: null } : m,
      ),
    })),

  reset: () => set({ ...initial }),
}));
