import { http, HttpResponse } from "msw";
import { ApiError, api } from "./api-client";
import { fail, ok, server } from "@/test/server";
import { makeModel } from "@/test/fixtures";

describe("api client", () => {
  it("unwraps the envelope's data", async () => {
    server.use(http.get("*/api/models", () => ok([makeModel({ id: 3 })])));
    const models = await api.listModels();
    expect(models).toHaveLength(1);
    expect(models[0].id).toBe(3);
  });

  it("throws ApiError with the server's code, message, details and status", async () => {
    server.use(
      http.post("*/api/models/7/load", () =>
        fail("INSUFFICIENT_MEMORY", "Not enough memory to load this model.", 507, { required_mb: 900, available_mb: 100 }),
      ),
    );
    const error = await api.loadModel(7).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({
      code: "INSUFFICIENT_MEMORY",
      message: "Not enough memory to load this model.",
      details: { required_mb: 900, available_mb: 100 },
      status: 507,
    });
  });

  it("sends the request body as JSON", async () => {
    let body: unknown;
    server.use(
      http.post("*/api/models", async ({ request }) => {
        body = await request.json();
        return ok(makeModel({ status: "downloading" }), 202);
      }),
    );
    const model = await api.createModel({ source: "huggingface", repo_id: "a/b", quantization: "Q8" });
    expect(body).toEqual({ source: "huggingface", repo_id: "a/b", quantization: "Q8" });
    expect(model.status).toBe("downloading");
  });

  it("reports a response without an envelope as an HTTP error", async () => {
    server.use(http.get("*/api/models/1", () => new HttpResponse("Bad Gateway", { status: 502 })));
    await expect(api.getModel(1)).rejects.toMatchObject({ code: "HTTP_ERROR", status: 502 });
  });

  it("reports an unreachable server as a network error", async () => {
    server.use(http.get("*/api/health", () => HttpResponse.error()));
    await expect(api.health()).rejects.toMatchObject({ code: "NETWORK_ERROR", status: 0 });
  });

  it("asks for one page of models and reads the total from X-Total-Count", async () => {
    let query = "";
    server.use(
      http.get("*/api/models", ({ request }) => {
        query = new URL(request.url).search;
        return HttpResponse.json({ success: true, data: [makeModel({ id: 7 })], error: null }, { headers: { "X-Total-Count": "120" } });
      }),
    );
    const page = await api.listModelsPage({ limit: 50, offset: 50, status: "ready", q: "" });
    expect(query).toBe("?limit=50&offset=50&status=ready");
    expect(page.total).toBe(120);
    expect(page.models.map((m) => m.id)).toEqual([7]);
  });

  it("calls every endpoint at its path", async () => {
    const hits: string[] = [];
    const record = (data: unknown) => ({ request }: { request: Request }) => {
      hits.push(`${request.method} ${new URL(request.url).pathname}`);
      return ok(data);
    };
    server.use(
      http.post("*/api/models/preview", record({})),
      http.post("*/api/models/:id/cancel", record(makeModel())),
      http.post("*/api/models/:id/retry", record(makeModel())),
      http.post("*/api/models/:id/unload", record(makeModel())),
      http.delete("*/api/models/:id", record(null)),
    );
    await api.previewModel({ repo_id: "a/b" });
    await api.cancelDownload(2);
    await api.retryDownload(2, "hf_x");
    await api.unloadModel(2);
    await api.deleteModel(2);
    expect(hits).toEqual([
      "POST /api/models/preview",
      "POST /api/models/2/cancel",
      "POST /api/models/2/retry",
      "POST /api/models/2/unload",
      "DELETE /api/models/2",
    ]);
  });
});
