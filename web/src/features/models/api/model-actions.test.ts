import { http } from "msw";
import { useModelsStore } from "../stores/models-store";
import { createModel, loadModel, refreshModel } from "./model-actions";
import { ok, server } from "@/test/server";
import { makeModel } from "@/test/fixtures";

const store = () => useModelsStore.getState();

describe("model actions", () => {
  it("keeps the newer record when an event brought it before the create answer", async () => {
    // The download finished and its refetch landed before the 202 answer arrived.
    let answer!: () => void;
    const gate = new Promise<void>((r) => (answer = r));
    server.use(
      http.post("*/api/models", async () => {
        await gate;
        return ok(makeModel({ id: 5, status: "downloading" }), 202);
      }),
      http.get("*/api/models/5", () => ok(makeModel({ id: 5, status: "ready" }))),
    );
    const created = createModel({ source: "huggingface", repo_id: "test-org/tiny-llama" });
    await refreshModel(5);
    answer();
    await created;
    await vi.waitFor(() => expect(store().models.find((m) => m.id === 5)?.status).toBe("ready"));
  });

  it("does not let a load answer undo a completion that arrived first", async () => {
    store().setModels([makeModel({ id: 1, status: "ready" })]);
    let answer!: () => void;
    const gate = new Promise<void>((r) => (answer = r));
    server.use(
      http.post("*/api/models/1/load", async () => {
        await gate;
        return ok(makeModel({ id: 1, status: "loading" }), 202);
      }),
      http.get("*/api/models/1", () => ok(makeModel({ id: 1, status: "loaded", memory_footprint: 1 }))),
    );
    const loading = loadModel(1);
    store().applyLoadComplete(1);
    answer();
    await loading;
    await vi.waitFor(() => expect(store().models[0]).toMatchObject({ status: "loaded", memory_footprint: 1 }));
  });

  it("drops a model the server no longer has", async () => {
    store().setModels([makeModel({ id: 3 })]);
    server.use(http.get("*/api/models/3", () => new Response(JSON.stringify({ success: false, data: null, error: { code: "MODEL_NOT_FOUND", message: "gone" } }), { status: 404 })));
    await refreshModel(3);
    expect(store().models).toEqual([]);
  });
});
