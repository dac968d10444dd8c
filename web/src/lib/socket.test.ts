// socket.ts itself, with socket.io-client replaced by an in-memory emitter.
import { http } from "msw";
import { useModelsStore } from "@/features/models/stores/models-store";
import { useSystemStore } from "@/features/system/stores/system-store";
import { ok, server } from "@/test/server";
import { makeModel } from "@/test/fixtures";

vi.unmock("@/lib/socket");

type Handler = (...args: unknown[]) => void;

class FakeEmitter {
  handlers = new Map<string, Handler[]>();
  on(event: string, handler: Handler) {
    this.handlers.set(event, [...(this.handlers.get(event) ?? []), handler]);
    return this;
  }
  fire(event: string, ...args: unknown[]) {
    for (const h of this.handlers.get(event) ?? []) h(...args);
  }
}

class FakeSocket extends FakeEmitter {
  io = new FakeEmitter();
  active = true;
  emitted: string[] = [];
  emit(event: string) {
    this.emitted.push(event);
    return this;
  }
  connect = vi.fn();
  disconnect = vi.fn();
  removeAllListeners = vi.fn();
}

const fake = vi.hoisted(() => ({ socket: null as unknown, options: null as unknown }));

vi.mock("socket.io-client", () => ({
  io: (_url: string, options: unknown) => {
    fake.options = options;
    return fake.socket;
  },
}));

const { connectSocket, disconnectSocket } = await import("./socket");

let socket: FakeSocket;
beforeEach(() => {
  socket = new FakeSocket();
  fake.socket = socket;
  connectSocket();
});
afterEach(() => disconnectSocket());

const models = () => useModelsStore.getState();

describe("socket", () => {
  it("uses the Socket.IO path and joins the system room on connect", () => {
    expect(fake.options).toMatchObject({ path: "/socket.io/", reconnection: true });
    socket.fire("connect");
    expect(socket.emitted).toContain("system:join");
    expect(useSystemStore.getState().connection).toBe("connected");
  });

  it("tracks reconnecting and reconnects after a server disconnect", () => {
    socket.fire("connect");
    socket.fire("disconnect", "io server disconnect");
    expect(useSystemStore.getState().connection).toBe("reconnecting");
    expect(socket.connect).toHaveBeenCalled();
    socket.io.fire("reconnect_failed");
    expect(useSystemStore.getState().connection).toBe("disconnected");
  });

  it("feeds metrics and download progress to the stores", () => {
    models().setModels([makeModel({ id: 1, status: "downloading" })]);
    socket.fire("system:metrics", { gpu_utilization: 0, gpu_memory_used_mb: 0, gpu_memory_total_mb: 0, gpu_temperature: 0, device: "cpu", memory_total_mb: 100, memory_free_mb: 60 });
    socket.fire("model:download:progress", { modelId: 1, progress: 30, downloadedBytes: 3, totalBytes: 10, speedBps: 5 });
    expect(useSystemStore.getState().metrics?.memory_free_mb).toBe(60);
    expect(models().models[0].download_progress).toBe(30);
  });

  it("refetches the model when its download completes", async () => {
    models().setModels([makeModel({ id: 1, status: "downloading" })]);
    server.use(http.get("*/api/models/1", () => ok(makeModel({ id: 1, status: "ready", disk_size_mb: 17 }))));
    socket.fire("model:download:complete", { modelId: 1, localPath: "/x" });
    await vi.waitFor(() => expect(models().models[0].status).toBe("ready"));
  });

  it("shows a cancelled download's message and then server truth", async () => {
    models().setModels([makeModel({ id: 1, status: "downloading" })]);
    server.use(
      http.get("*/api/models/1", () => ok(makeModel({ id: 1, status: "error", error_message: "Download cancelled by user" }))),
    );
    socket.fire("model:download:error", { modelId: 1, error: { code: "DOWNLOAD_CANCELLED", message: "Download cancelled by user" } });
    expect(models().models[0]).toMatchObject({ status: "error", error_message: "Download cancelled by user" });
    await vi.waitFor(() => expect(models().models[0].updated_at).toBeTruthy());
  });

  it("moves a model through load and unload", async () => {
    models().setModels([makeModel({ id: 1, status: "ready" })]);
    server.use(http.get("*/api/models/1", () => ok(makeModel({ id: 1, status: "loaded", memory_footprint: 1_048_576 }))));
    socket.fire("model:load:progress", { modelId: 1, stage: "reading", progress: 50 });
    expect(models().models[0].status).toBe("loading");
    socket.fire("model:load:complete", { modelId: 1, memoryUsedMb: 1 });
    expect(models().models[0].status).toBe("loaded");
    await vi.waitFor(() => expect(models().models[0].memory_footprint).toBe(1_048_576));
    server.use(http.get("*/api/models/1", () => ok(makeModel({ id: 1, status: "ready" }))));
    socket.fire("model:unload:complete", { modelId: 1 });
    expect(models().models[0].status).toBe("ready");
    await vi.waitFor(() => expect(models().models[0].memory_footprint).toBeNull());
  });
});
