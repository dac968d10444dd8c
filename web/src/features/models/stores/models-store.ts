//! The models registry as the page sees it: one page of the list (search, status
//! filter, offset) from the API, kept live by socket events (progress is merged
//! into the model; load progress kept aside).
import { create } from "zustand";
import type {
  DownloadProgressEvent,
  LoadProgress,
  LoadProgressEvent,
  ModelErrorEvent,
  ModelResponse,
  ModelStatus,
} from "../types";

/** Models per page: the page stays light with tens of thousands of models. */
export const PAGE_SIZE = 50;

/** What the page asks the server for. */
export interface ModelsQuery {
  /** Substring of name or repo id ("" = any). */
  q: string;
  /** One status, or "" for all. */
  status: ModelStatus | "";
  /** Rows skipped before this page. */
  offset: number;
}

/** Whether a model belongs in the list the query asks for (as the server decides it). */
export function matchesQuery(model: ModelResponse, query: ModelsQuery): boolean {
  if (query.status && model.status !== query.status) return false;
  const q = query.q.trim().toLowerCase();
  if (!q) return true;
  return model.name.toLowerCase().includes(q) || (model.repo_id ?? "").toLowerCase().includes(q);
}

interface ModelsState {
  /** The current page, newest first. */
  models: ModelResponse[];
  /** How many models the query matches on the server (every page). */
  total: number;
  /** Search, filter and offset of the page shown. */
  query: ModelsQuery;
  /** The model in memory, wherever it is listed (its load is undone by loading another). */
  loadedModel: ModelResponse | null;
  /** Ids an event named that the page did not show, already asked about once. */
  unknownAsked: Record<number, true>;
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

  /** A page from the server; `total` defaults to the page's length (the whole list). */
  setModels: (models: ModelResponse[], total?: number) => void;
  /** Changes the search or filter (back to the first page) or the offset. */
  setQuery: (change: Partial<ModelsQuery>) => void;
  setLoadedModel: (model: ModelResponse | null) => void;
  /** Records that an unknown id was asked about; false if it already was. */
  askAboutUnknown: (id: number) => boolean;
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
  total: 0,
  query: { q: "", status: "", offset: 0 } as ModelsQuery,
  loadedModel: null as ModelResponse | null,
  unknownAsked: {} as Record<number, true>,
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

/** The model in memory: its card on this page if shown (the freshest), else the one fetched aside. */
export function selectLoadedModel(state: Pick<ModelsState, "models" | "loadedModel">): ModelResponse | null {
  return state.models.find((m) => m.status === "loaded") ?? state.loadedModel;
}

export const useModelsStore = create<ModelsState>()((set) => ({
  ...initial,

  setModels: (models, total) =>
    set({ models: sortNewestFirst(models), total: total ?? models.length, loaded: true, listError: null }),
  setQuery: (change) =>
    set((state) => {
      const filterChanged = ("q" in change && change.q !== state.query.q) || ("status" in change && change.status !== state.query.status);
      const query = { ...state.query, ...change };
      // A new search starts from its first page.
      if (filterChanged && !("offset" in change)) query.offset = 0;
      return { query };
    }),
  setLoadedModel: (loadedModel) => set({ loadedModel }),
  askAboutUnknown: (id) => {
    let first = false;
    set((state) => {
      if (state.unknownAsked[id]) return state;
      first = true;
      return { unknownAsked: { ...state.unknownAsked, [id]: true } };
    });
    return first;
  },
  setListError: (listError) => set({ listError, loaded: true }),

  upsertModel: (model) =>
    set((state) => {
      const loadProgress = model.status === "loading" ? state.loadProgress : without(state.loadProgress, model.id);
      const loadedModel = model.status === "loaded" ? model : state.loadedModel?.id === model.id ? null : state.loadedModel;
      if (state.models.some((m) => m.id === model.id)) {
        // A card on the page stays there even when it no longer matches the filter,
        // so it does not vanish under the pointer; the next fetch settles it.
        return { models: patch(state.models, model.id, () => model), loadProgress, loadedModel };
      }
      // A new model is the newest: it belongs at the top of the first page, if the filter
      // takes it. An older one that sorts past a full page belongs to a later page.
      if (state.query.offset !== 0 || !matchesQuery(model, state.query)) return { loadProgress, loadedModel };
      const models = sortNewestFirst([...state.models, model]).slice(0, PAGE_SIZE);
      if (!models.some((m) => m.id === model.id)) return { loadProgress, loadedModel };
      return { models, total: state.total + 1, loadProgress, loadedModel };
    }),

  removeModel: (id) =>
    set((state) => ({
      models: state.models.filter((m) => m.id !== id),
      total: state.models.some((m) => m.id === id) ? Math.max(0, state.total - 1) : state.total,
      loadedModel: state.loadedModel?.id === id ? null : state.loadedModel,
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
      loadedModel: state.loadedModel?.id === id ? state.loadedModel : null,
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
      loadedModel: state.loadedModel?.id === id ? null : state.loadedModel,
      models: patch(state.models, id, (m) =>
        m.status === "loaded" ? { ...m, status: "ready", memory_footprint: null, device: null, dtype: null, num_parameters: null } : m,
      ),
    })),

  reset: () => set({ ...initial }),
}));
