//! The models feature's live events: each `model:*` event updates the card it
//! names and then asks the server for the truth; a reconnect refetches the list.
import { toast } from "@/components/ui/toast-store";
import type { SocketListeners } from "@/lib/socket";
import { useModelsStore } from "../stores/models-store";
import type {
  DownloadCompleteEvent,
  DownloadProgressEvent,
  LoadCompleteEvent,
  LoadProgressEvent,
  ModelErrorEvent,
  UnloadCompleteEvent,
} from "../types";
import { fetchLoadedModel, fetchModels, refreshModel } from "./model-actions";

const models = () => useModelsStore.getState();

/**
 * A model the page does not show may be a new one (started elsewhere, so the
 * newest): the first page is fetched again, once per id, so the progress events
 * of a model on another page or outside the filter cost nothing.
 */
function ensureKnown(id: number): void {
  const state = models();
  if (state.models.some((m) => m.id === id)) return;
  if (state.query.offset === 0 && state.askAboutUnknown(id)) void fetchModels();
}

/** Server truth for a card on the page; a model the page does not show is treated as above. */
function refreshShown(id: number): void {
  if (models().models.some((m) => m.id === id)) void refreshModel(id);
  else ensureKnown(id);
}

export const modelSocketListeners: SocketListeners = {
  // Events were missed while away: take the list from the server again.
  onConnect: (reconnected) => {
    if (reconnected) {
      void fetchModels();
      void fetchLoadedModel();
    }
  },
  events: {
    "model:download:progress": (e: DownloadProgressEvent) => {
      ensureKnown(e.modelId);
      models().applyDownloadProgress(e);
    },
    "model:download:complete": (e: DownloadCompleteEvent) => {
      refreshShown(e.modelId);
    },
    "model:download:error": (e: ModelErrorEvent) => {
      models().applyDownloadError(e);
      if (e.error?.code !== "DOWNLOAD_CANCELLED") toast.error(e.error?.message ?? "The download failed.", "Download failed");
      refreshShown(e.modelId);
    },
    "model:load:progress": (e: LoadProgressEvent) => {
      ensureKnown(e.modelId);
      models().applyLoadProgress(e);
    },
    "model:load:complete": (e: LoadCompleteEvent) => {
      const others = models().models.filter((m) => m.status === "loaded" && m.id !== e.modelId);
      models().applyLoadComplete(e.modelId);
      refreshShown(e.modelId);
      void fetchLoadedModel();
      for (const m of others) void refreshModel(m.id);
    },
    "model:load:error": (e: ModelErrorEvent) => {
      models().applyLoadError(e);
      toast.error(e.error?.message ?? "The load failed.", "Load failed");
      refreshShown(e.modelId);
    },
    "model:unload:complete": (e: UnloadCompleteEvent) => {
      models().applyUnloadComplete(e.modelId);
      refreshShown(e.modelId);
    },
  },
};
