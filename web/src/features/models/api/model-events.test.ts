// The models feature's socket listeners, called as the socket would call them.
import { http } from "msw";
import { makeModel } from "@/test/fixtures";
import { ok, server } from "@/test/server";
import { useModelsStore } from "../stores/models-store";
import { modelSocketListeners } from "./model-events";

const models = () => useModelsStore.getState();

function fire(event: string, payload: unknown) {
  const handler = modelSocketListeners.events?.[event];
  if (!handler) throw new Error(`no listener for ${event}`);
  (handler as (p: unknown) => void)(payload);
}

describe("model events", () => {
  it("merge download progress into the card", () => {
    models().setModels([makeModel({ id: 1, status: "downloading" })]);
    fire("model:download:progress", { modelId: 1, progress: 30, downloadedBytes: 3, totalBytes: 10, speedBps: 5 });
    expect(models().models[0].download_progress).toBe(30);
  });

  it("refetch the model when its download completes", async () => {
    models().setModels([makeModel({ id: 1, status: "downloading" })]);
    server.use(http.get("*/api/models/1", () => ok(makeModel({ id: 1, status: "ready", disk_size_mb: 17 }))));
    fire("model:download:complete", { modelId: 1, localPath: "/x" });
    await vi.waitFor(() => expect(models().models[0].status).toBe("ready"));
  });

  it("show a cancelled download's message and then server truth", async () => {
    models().setModels([makeModel({ id: 1, status: "downloading" })]);
    server.use(
      http.get("*/api/models/1", () => ok(makeModel({ id: 1, status: "error", error_message: "Download cancelled by user" }))),
    );
    fire("model:download:error", { modelId: 1, error: { code: "DOWNLOAD_CANCELLED", message: "Download cancelled by user" } });
    expect(models().models[0]).toMatchObject({ status: "error", error_message: "Download cancelled by user" });
    await vi.waitFor(() => expect(models().models[0].updated_at).toBeTruthy());
  });

  it("move a model through load and unload", async () => {
    models().setModels([makeModel({ id: 1, status: "ready" })]);
    server.use(
      http.get("*/api/models/1", () => ok(makeModel({ id: 1, status: "loaded", memory_footprint: 1_048_576 }))),
      http.get("*/api/models", () => ok([makeModel({ id: 1, status: "loaded" })])),
    );
    fire("model:load:progress", { modelId: 1, stage: "reading", progress: 50 });
    expect(models().models[0].status).toBe("loading");
    fire("model:load:complete", { modelId: 1, memoryUsedMb: 1 });
    expect(models().models[0].status).toBe("loaded");
    await vi.waitFor(() => expect(models().models[0].memory_footprint).toBe(1_048_576));
    server.use(http.get("*/api/models/1", () => ok(makeModel({ id: 1, status: "ready" }))));
    fire("model:unload:complete", { modelId: 1 });
    expect(models().models[0].status).toBe("ready");
    await vi.waitFor(() => expect(models().models[0].memory_footprint).toBeNull());
  });

  it("fetch the first page once for a model the page does not show", async () => {
    models().setModels([makeModel({ id: 1 })]);
    let lists = 0;
    server.use(
      http.get("*/api/models", () => {
        lists += 1;
        return ok([makeModel({ id: 2, status: "downloading", created_at: "2025-02-01T00:00:00Z" }), makeModel({ id: 1 })]);
      }),
    );
    const progress = { modelId: 2, progress: 1, downloadedBytes: 1, totalBytes: 10, speedBps: 1 };
    fire("model:download:progress", progress);
    fire("model:download:progress", progress);
    await vi.waitFor(() => expect(models().models.map((m) => m.id)).toEqual([2, 1]));
    expect(lists).toBe(1);
  });

  it("leave the list alone for a model on another page", () => {
    models().setModels([makeModel({ id: 1 })], 500);
    models().setQuery({ offset: 50 });
    fire("model:download:progress", { modelId: 400, progress: 1, downloadedBytes: 1, totalBytes: 10, speedBps: 1 });
    expect(models().models.map((m) => m.id)).toEqual([1]);
  });

  it("leave a model on another page alone when its download completes", () => {
    models().setModels([makeModel({ id: 1 })], 500);
    models().setQuery({ offset: 50 });
    fire("model:download:complete", { modelId: 400, localPath: "/x" });
    fire("model:unload:complete", { modelId: 400 });
    expect(models().models.map((m) => m.id)).toEqual([1]);
  });
});
