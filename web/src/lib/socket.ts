//! The one Socket.IO connection: joins the system room, feeds the stores with
//! live events, tracks the connection state, and refetches server truth.
import { io, type Socket } from "socket.io-client";
import { toast } from "@/components/ui/toast-store";
import { fetchModels, refreshModel } from "@/features/models/api/model-actions";
import { useModelsStore } from "@/features/models/stores/models-store";
import type {
  DownloadCompleteEvent,
  DownloadProgressEvent,
  LoadCompleteEvent,
  LoadProgressEvent,
  ModelErrorEvent,
  UnloadCompleteEvent,
} from "@/features/models/types";
import { useSystemStore } from "@/features/system/stores/system-store";
import type { SystemMetrics } from "@/features/system/types";

let socket: Socket | null = null;

const models = () => useModelsStore.getState();
const setConnection = (s: Parameters<ReturnType<typeof useSystemStore.getState>["setConnection"]>[0]) =>
  useSystemStore.getState().setConnection(s);

/** A model the list does not know yet (started elsewhere) is fetched. */
function ensureKnown(id: number): void {
  if (!models().models.some((m) => m.id === id)) void refreshModel(id);
}

/** Opens the connection once; later calls return the same socket. */
export function connectSocket(): Socket {
  if (socket) return socket;
  const s = io("/", { path: "/socket.io/", reconnection: true, reconnectionDelay: 500, reconnectionDelayMax: 5000 });
  socket = s;
  let connectedBefore = false;

  s.on("connect", () => {
    setConnection("connected");
    s.emit("system:join");
    // Events were missed while away: take the list from the server again.
    if (connectedBefore) void fetchModels();
    connectedBefore = true;
  });
  s.on("disconnect", (reason) => {
    if (reason === "io client disconnect") {
      setConnection("disconnected");
      return;
    }
    setConnection("reconnecting");
    // The server closed us on purpose: socket.io does not retry that by itself.
    if (reason === "io server disconnect") s.connect();
  });
  s.on("connect_error", () => setConnection(s.active ? "reconnecting" : "disconnected"));
  s.io.on("reconnect_attempt", () => setConnection("reconnecting"));
  s.io.on("reconnect_failed", () => setConnection("disconnected"));

  s.on("model:download:progress", (e: DownloadProgressEvent) => {
    ensureKnown(e.modelId);
    models().applyDownloadProgress(e);
  });
  s.on("model:download:complete", (e: DownloadCompleteEvent) => {
    void refreshModel(e.modelId);
  });
  s.on("model:download:error", (e: ModelErrorEvent) => {
    models().applyDownloadError(e);
    if (e.error?.code !== "DOWNLOAD_CANCELLED") toast.error(e.error?.message ?? "The download failed.", "Download failed");
    void refreshModel(e.modelId);
  });
  s.on("model:load:progress", (e: LoadProgressEvent) => {
    ensureKnown(e.modelId);
    models().applyLoadProgress(e);
  });
  s.on("model:load:complete", (e: LoadCompleteEvent) => {
    const others = models().models.filter((m) => m.status === "loaded" && m.id !== e.modelId);
    models().applyLoadComplete(e.modelId);
    void refreshModel(e.modelId);
    for (const m of others) void refreshModel(m.id);
  });
  s.on("model:load:error", (e: ModelErrorEvent) => {
    models().applyLoadError(e);
    toast.error(e.error?.message ?? "The load failed.", "Load failed");
    void refreshModel(e.modelId);
  });
  s.on("model:unload:complete", (e: UnloadCompleteEvent) => {
    models().applyUnloadComplete(e.modelId);
    void refreshModel(e.modelId);
  });
  s.on("system:metrics", (m: SystemMetrics) => useSystemStore.getState().setMetrics(m));

  return s;
}

/** Closes the connection (tests, page teardown). */
export function disconnectSocket(): void {
  socket?.disconnect();
  socket?.removeAllListeners();
  socket = null;
}
