import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { http, HttpResponse } from "msw";
import { makeModel } from "@/test/fixtures";
import { server } from "@/test/server";
import { fetchModels } from "../api/model-actions";
import { useModelsStore } from "../stores/models-store";
import { ModelList } from "./model-list";

const TOTAL = 10_000;

/** A server with TOTAL models (ids TOTAL..1, newest first) that pages and filters like millm. */
function serveMany() {
  const queries: URLSearchParams[] = [];
  server.use(
    http.get("*/api/models", ({ request }) => {
      const params = new URL(request.url).searchParams;
      queries.push(params);
      const q = (params.get("q") ?? "").toLowerCase();
      const status = params.get("status");
      const all = Array.from({ length: TOTAL }, (_, i) => TOTAL - i)
        .map((id) => ({ id, name: `model-${id}`, status: id % 2 ? "ready" : "error" }))
        .filter((m) => (!q || m.name.includes(q)) && (!status || m.status === status));
      const offset = Number(params.get("offset") ?? 0);
      const limit = Number(params.get("limit") ?? all.length);
      const page = all.slice(offset, offset + limit).map((m) =>
        makeModel({ id: m.id, name: m.name, repo_id: `org/${m.name}`, status: m.status as "ready" | "error", created_at: null }),
      );
      return HttpResponse.json({ success: true, data: page, error: null }, { headers: { "X-Total-Count": String(all.length) } });
    }),
  );
  return queries;
}

async function setup() {
  const queries = serveMany();
  const user = userEvent.setup();
  render(<ModelList freeMemoryMb={1000} />);
  await fetchModels();
  return { queries, user };
}

const cards = () => screen.getAllByTestId(/^model-card-/);

// A test may stand in for scrollIntoView; the next one starts without it again.
afterEach(() => {
  delete (Element.prototype as Partial<Element>).scrollIntoView;
});

describe("ModelList", () => {
  it("shows one page of 50 of 10,000 models with the total", async () => {
    const { queries } = await setup();
    expect(await screen.findByTestId("models-count")).toHaveTextContent("10,000 models");
    expect(cards()).toHaveLength(50);
    expect(screen.getByTestId("page-range")).toHaveTextContent("1–50 of 10,000");
    expect(queries[0].get("limit")).toBe("50");
    expect(queries[0].get("offset")).toBe("0");
    expect(screen.getByRole("button", { name: "Previous" })).toBeDisabled();
  });

  it("pages forward and back, from the top of the list", async () => {
    const scrolled: Element[] = [];
    // jsdom has no layout, hence no scrollIntoView.
    Element.prototype.scrollIntoView = function (this: Element) {
      scrolled.push(this);
    };
    const { user } = await setup();
    await user.click(screen.getByRole("button", { name: "Next" }));
    expect(await screen.findByText("51–100 of 10,000")).toBeInTheDocument();
    expect(scrolled).toEqual([screen.getByRole("heading", { name: "Models" })]);
    expect(screen.getByTestId("model-card-9950")).toBeInTheDocument();
    await user.click(screen.getByRole("button", { name: "Previous" }));
    expect(await screen.findByText("1–50 of 10,000")).toBeInTheDocument();
  });

  it("searches by name on the server after typing pauses, from the first page", async () => {
    const { user, queries } = await setup();
    await user.click(screen.getByRole("button", { name: "Next" }));
    await screen.findByText("51–100 of 10,000");
    await user.type(screen.getByRole("searchbox", { name: "Search" }), "model-999");
    await vi.waitFor(() => expect(screen.getByTestId("models-count")).toHaveTextContent("11 models found"));
    expect(cards()).toHaveLength(11);
    const last = queries.at(-1);
    expect(last?.get("q")).toBe("model-999");
    expect(last?.get("offset")).toBe("0");
    // Typing fast sends one search, not one per key.
    expect(queries.filter((q) => q.has("q")).length).toBeLessThan(3);
    expect(screen.queryByRole("navigation", { name: "Pages of models" })).not.toBeInTheDocument();
  });

  it("filters by status", async () => {
    const { user, queries } = await setup();
    await user.selectOptions(screen.getByRole("combobox", { name: "Status" }), "error");
    await vi.waitFor(() => expect(screen.getByTestId("models-count")).toHaveTextContent("5,000 models found"));
    expect(queries.at(-1)?.get("status")).toBe("error");
    expect(cards().every((c) => c.getAttribute("data-status") === "error")).toBe(true);
  });

  it("says when nothing matches", async () => {
    const { user } = await setup();
    await user.type(screen.getByRole("searchbox", { name: "Search" }), "no-such-model");
    expect(await screen.findByText("No model matches this search.")).toBeInTheDocument();
  });

  it("keeps live updates on the current page", async () => {
    await setup();
    useModelsStore.getState().applyLoadProgress({ modelId: 10_000, stage: "reading", progress: 10 });
    expect(await screen.findByTestId("load-progress")).toBeInTheDocument();
  });
});
