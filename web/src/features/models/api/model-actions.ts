//! The models feature's requests: each calls the API client, keeps the store
//! in step with the server, and turns an `ApiError` into a toast.
import { ApiError, api, errorMessage } from "@/lib/api-client";
import { toast } from "@/components/ui/toast-store";
import { PAGE_SIZE, useModelsStore } from "../stores/models-store";
import type { ModelDownloadRequest, ModelPreviewResponse, ModelResponse } from "../types";

const store = () => useModelsStore.getState();

/**
 * Shows a failed request as a toast with the server's message. A refusal because another
 * model is locked names that model and what to do, whatever the action was.
 */
export function reportError(error: unknown, title?: string): void {
  if (error instanceof ApiError && error.code === "MODEL_LOCKED") {
    const lockedId = Number(error.details.locked_model_id);
    const { models, loadedModel } = store();
    const locked = [...models, ...(loadedModel ? [loadedModel] : [])].find((m) => m.id === lockedId);
    // The server names the model by id; the page knows its name.
    const message = locked ? `${locked.name} is locked in memory: unlock it on its card first.` : error.message;
    toast.error(message, title ? `${title}: a model is locked` : "A model is locked");
    return;
  }
  toast.error(errorMessage(error), title);
}

/** Counts list requests, so only the answer to the latest one is shown. */
let listRequests = 0;

/** GET /api/models: the page the store's query asks for (search, status, offset). */
export async function fetchModels(): Promise<void> {
  const { q, status, offset } = store().query;
  const ticket = ++listRequests;
  try {
    const page = await api.listModelsPage({ limit: PAGE_SIZE, offset, ...(status ? { status } : {}), ...(q.trim() ? { q: q.trim() } : {}) });
    // A later search or page was asked for meanwhile: this answer is stale.
    if (ticket !== listRequests) return;
    if (page.models.length === 0 && offset > 0 && page.total > 0) {
      // The page emptied under us (deletes elsewhere): show the last page there is.
      store().setQuery({ offset: Math.floor((page.total - 1) / PAGE_SIZE) * PAGE_SIZE });
      return fetchModels();
    }
    store().setModels(page.models, page.total);
  } catch (error) {
    if (ticket !== listRequests) return;
    store().setListError(errorMessage(error));
    reportError(error, "Could not list models");
  }
}

/** The loaded model, wherever it is listed (a page may not show it). */
export async function fetchLoadedModel(): Promise<void> {
  try {
    const { models } = await api.listModelsPage({ status: "loaded", limit: 1 });
    store().setLoadedModel(models.find((m) => m.status === "loaded") ?? null);
  } catch {
    // The page's own loaded card (if any) still counts; the next event asks again.
  }
}

/** Shows another search, status filter or page. */
export function showModels(change: Partial<ReturnType<typeof store>["query"]>): Promise<void> {
  store().setQuery(change);
  return fetchModels();
}

/** In-flight refreshes, so a burst of events for one model makes few requests. */
const refreshing = new Map<number, Promise<void>>();
/** Models whose state changed while their refresh was in flight: fetch once more. */
const refreshAgain = new Set<number>();

/** GET /api/models/{id}: replace the card with server truth (or drop it if gone). */
export function refreshModel(id: number): Promise<void> {
  const running = refreshing.get(id);
  if (running) {
    // That answer may predate the news that asked for this refresh.
    refreshAgain.add(id);
    return running;
  }
  const job = (async () => {
    try {
      do {
        refreshAgain.delete(id);
        try {
          const model = await api.getModel(id);
          store().upsertModel(model);
          store().touch(id);
        } catch (error) {
          if (error instanceof ApiError && error.code === "MODEL_NOT_FOUND") store().removeModel(id);
          // Other failures: keep what the events said; the next event or reconnect refreshes again.
        }
      } while (refreshAgain.has(id));
    } finally {
      refreshing.delete(id);
    }
  })();
  refreshing.set(id, job);
  return job;
}

/** POST /api/models/preview; undefined when it failed (already toasted). */
export async function previewModel(repoId: string, revision: string, hfToken: string): Promise<ModelPreviewResponse | undefined> {
  try {
    return await api.previewModel({
      repo_id: repoId,
      ...(revision && revision !== "main" ? { revision } : {}),
      ...(hfToken ? { hf_token: hfToken } : {}),
    });
  } catch (error) {
    reportError(error, "Preview failed");
    return undefined;
  }
}

/** POST /api/models; the new card appears at once. */
export async function createModel(body: ModelDownloadRequest): Promise<ModelResponse | undefined> {
  try {
    const model = await api.createModel(body);
    // An event may have brought the record first (a tiny download can finish
    // before this answer arrives): then this answer is the older news.
    if (store().models.some((m) => m.id === model.id)) void refreshModel(model.id);
    else store().upsertModel(model);
    toast.success(
      body.source === "local" ? `Registered "${model.name}".` : `Downloading "${model.name}".`,
    );
    return model;
  } catch (error) {
    reportError(error, body.source === "local" ? "Could not register the folder" : "Download not started");
    return undefined;
  }
}

/** Runs one action on a model with its buttons disabled meanwhile. */
async function onModel(id: number, title: string, call: () => Promise<ModelResponse | unknown>): Promise<boolean> {
  store().setPending(id, true);
  const before = store().revision[id] ?? 0;
  try {
    const result = await call();
    if (result && typeof result === "object" && "id" in result && "status" in result) {
      // An event that arrived meanwhile is newer than this answer: ask again instead.
      if ((store().revision[id] ?? 0) === before) store().upsertModel(result as ModelResponse);
      else void refreshModel(id);
    }
    return true;
  } catch (error) {
    reportError(error, title);
    if (error instanceof ApiError && error.code !== "NETWORK_ERROR") void refreshModel(id);
    return false;
  } finally {
    store().setPending(id, false);
  }
}

export const loadModel = (id: number) => onModel(id, "Load failed", () => api.loadModel(id));
export const unloadModel = (id: number) => onModel(id, "Unload failed", () => api.unloadModel(id));
export const lockModel = (id: number) => onModel(id, "Lock failed", () => api.lockModel(id));
export const unlockModel = (id: number) => onModel(id, "Unlock failed", () => api.unlockModel(id));
export const cancelDownload = (id: number) => onModel(id, "Cancel failed", () => api.cancelDownload(id));
export const retryDownload = (id: number, hfToken?: string) =>
  onModel(id, "Retry failed", () => api.retryDownload(id, hfToken));

/** DELETE /api/models/{id}; the card goes when the server agrees. */
export async function deleteModel(id: number): Promise<boolean> {
  const ok = await onModel(id, "Delete failed", () => api.deleteModel(id));
  if (ok) {
    const name = store().models.find((m) => m.id === id)?.name;
    store().removeModel(id);
    toast.success(name ? `Deleted "${name}".` : "Model deleted.");
    // Models after this page move up into the gap.
    const { total, query, models } = store();
    if (total > query.offset + models.length) void fetchModels();
  }
  return ok;
}
