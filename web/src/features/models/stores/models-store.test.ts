import { useModelsStore } from "./models-store";
import { makeModel } from "@/test/fixtures";

const store = () => useModelsStore.getState();
const byId = (id: number) => store().models.find((m) => m.id === id)!;

describe("models store", () => {
  it("keeps the list newest first", () => {
    store().setModels([
      makeModel({ id: 1, created_at: "2025-01-01T00:00:00Z" }),
      makeModel({ id: 2, created_at: "2025-03-01T00:00:00Z" }),
      makeModel({ id: 3, created_at: "2025-02-01T00:00:00Z" }),
    ]);
    expect(store().models.map((m) => m.id)).toEqual([2, 3, 1]);
    expect(store().loaded).toBe(true);
    store().upsertModel(makeModel({ id: 4, created_at: "2025-04-01T00:00:00Z" }));
    expect(store().models.map((m) => m.id)).toEqual([4, 2, 3, 1]);
  });

  it("replaces a model in place on upsert", () => {
    store().setModels([makeModel({ id: 1, status: "ready" })]);
    store().upsertModel(makeModel({ id: 1, status: "loaded" }));
    expect(store().models).toHaveLength(1);
    expect(store().models[0].status).toBe("loaded");
  });

  it("merges download progress into a downloading model only", () => {
    store().setModels([makeModel({ id: 1, status: "downloading" }), makeModel({ id: 2, status: "error" })]);
    const event = { progress: 42.4, downloadedBytes: 420, totalBytes: 1000, speedBps: 2_000_000 };
    store().applyDownloadProgress({ modelId: 1, ...event });
    store().applyDownloadProgress({ modelId: 2, ...event });
    expect(byId(1)).toMatchObject({ download_progress: 42, downloaded_bytes: 420, total_bytes: 1000, speed_bps: 2_000_000 });
    expect(byId(2).download_progress).toBeNull();
  });

  it("marks a failed download with the error's message", () => {
    store().setModels([makeModel({ id: 1, status: "downloading" })]);
    store().applyDownloadError({ modelId: 1, error: { code: "DOWNLOAD_CANCELLED", message: "Download cancelled by user" } });
    expect(store().models[0]).toMatchObject({ status: "error", error_message: "Download cancelled by user" });
  });

  it("tracks load progress and leaves one model loaded", () => {
    store().setModels([makeModel({ id: 1, status: "loaded" }), makeModel({ id: 2, status: "ready" })]);
    store().applyLoadProgress({ modelId: 2, stage: "reading tensors", progress: 30 });
    expect(store().loadProgress[2]).toEqual({ stage: "reading tensors", progress: 30 });
    expect(store().models.find((m) => m.id === 2)?.status).toBe("loading");
    store().applyLoadComplete(2);
    expect(store().models.find((m) => m.id === 2)?.status).toBe("loaded");
    expect(store().models.find((m) => m.id === 1)?.status).toBe("ready");
    expect(store().loadProgress[2]).toBeUndefined();
  });

  it("records a load error and an unload", () => {
    store().setModels([makeModel({ id: 1, status: "loading" }), makeModel({ id: 2, status: "loaded", memory_footprint: 1024 })]);
    store().applyLoadError({ modelId: 1, error: { code: "MODEL_LOAD_FAILED", message: "Weights unreadable." } });
    store().applyUnloadComplete(2);
    expect(byId(1)).toMatchObject({ status: "error", error_message: "Weights unreadable." });
    expect(byId(2)).toMatchObject({ status: "ready", memory_footprint: null });
  });

  it("removes a model and resets", () => {
    store().setModels([makeModel({ id: 1 })]);
    store().setPending(1, true);
    store().removeModel(1);
    expect(store().models).toEqual([]);
    expect(store().pending).toEqual({});
    store().reset();
    expect(store().loaded).toBe(false);
  });

  it("puts a new model at the top of the first page when the filter takes it", () => {
    store().setModels([makeModel({ id: 1, created_at: "2025-01-01T00:00:00Z" })], 120);
    store().upsertModel(makeModel({ id: 2, created_at: "2025-02-01T00:00:00Z" }));
    expect(store().models.map((m) => m.id)).toEqual([2, 1]);
    expect(store().total).toBe(121);

    store().setQuery({ status: "ready" });
    store().upsertModel(makeModel({ id: 3, status: "downloading" }));
    expect(store().models.some((m) => m.id === 3)).toBe(false);

    // An older model past a full first page stays on its own page.
    store().setQuery({ status: "" });
    const page = Array.from({ length: 50 }, (_, i) => makeModel({ id: 100 + i, created_at: "2025-03-01T00:00:00Z" }));
    store().setModels(page, 500);
    store().upsertModel(makeModel({ id: 5, created_at: "2024-01-01T00:00:00Z" }));
    expect(store().models.some((m) => m.id === 5)).toBe(false);
    expect(store().total).toBe(500);

    store().setQuery({ status: "", offset: 50 });
    store().upsertModel(makeModel({ id: 4 }));
    expect(store().models.some((m) => m.id === 4)).toBe(false);
  });

  it("starts a new search on its first page", () => {
    store().setQuery({ offset: 100 });
    store().setQuery({ q: "llama" });
    expect(store().query).toEqual({ q: "llama", status: "", offset: 0 });
  });

  it("follows the loaded model, wherever it is listed", () => {
    store().setModels([makeModel({ id: 1 })]);
    store().setLoadedModel(makeModel({ id: 7, status: "loaded" }));
    store().applyLoadComplete(1);
    expect(store().loadedModel).toBeNull();
    store().upsertModel(makeModel({ id: 1, status: "loaded" }));
    expect(store().loadedModel?.id).toBe(1);
    store().applyUnloadComplete(1);
    expect(store().loadedModel).toBeNull();
  });
});

