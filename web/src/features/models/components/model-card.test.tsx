import { act, render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { http } from "msw";
import { Toaster } from "@/components/ui/toast";
import { useModelsStore } from "../stores/models-store";
import type { ModelResponse } from "../types";
import { ModelCard } from "./model-card";
import { fail, ok, server } from "@/test/server";
import { makeModel } from "@/test/fixtures";

/** Renders the card of a model held in the store, as the list does. */
function StoreCard({ id }: { id: number }) {
  const model = useModelsStore((s) => s.models.find((m) => m.id === id));
  return model ? <ModelCard model={model} /> : <p>gone</p>;
}

function setup(overrides: Partial<ModelResponse>) {
  const model = makeModel(overrides);
  useModelsStore.getState().setModels([model]);
  const user = userEvent.setup();
  render(
    <>
      <StoreCard id={model.id} />
      <Toaster />
    </>,
  );
  return { user, model, card: screen.queryByTestId(`model-card-${model.id}`) };
}

const buttonNames = () =>
  within(screen.getByRole("group", { name: /Actions for/ }))
    .queryAllByRole("button")
    .map((b) => b.textContent);

describe("ModelCard", () => {
  it.each<[Partial<ModelResponse>, string[]]>([
    [{ status: "downloading" }, ["Cancel"]],
    [{ status: "ready" }, ["Load", "Delete"]],
    [{ status: "loading" }, []],
    [{ status: "loaded" }, ["Lock", "Unload"]],
    [{ status: "loaded", locked: true }, ["Unlock", "Unload"]],
    // A cancelled or failed Hub download has a revision (set when it starts) but no files.
    [{ status: "error", source: "huggingface", revision: "abc123", local_path: null }, ["Retry", "Delete"]],
    [{ status: "error", source: "huggingface", revision: null }, ["Retry", "Delete"]],
    // A Hub model whose folder the server names has its files: a failed load can be tried again.
    [{ status: "error", source: "huggingface", local_path: "/hub/snapshots/abc123" }, ["Load", "Retry", "Delete"]],
    [{ status: "error", source: "local", repo_id: null, local_path: "/m/x" }, ["Load", "Delete"]],
  ])("offers the actions of %j", (overrides, expected) => {
    setup(overrides);
    expect(buttonNames()).toEqual(expected);
  });

  it("shows the facts and the status badge", () => {
    setup({ status: "ready", disk_size_mb: 2048 });
    expect(screen.getByTestId("model-status")).toHaveTextContent("ready");
    expect(screen.getByText("Hugging Face")).toBeInTheDocument();
    expect(screen.getByText("4.2M")).toBeInTheDocument();
    expect(screen.getByText("Q4")).toBeInTheDocument();
    expect(screen.getByText("2.0 GB")).toBeInTheDocument();
  });

  it("shows download percent, speed and time left, live from the store", () => {
    setup({ status: "downloading", download_progress: 10, downloaded_bytes: 1_048_576, total_bytes: 10_485_760, speed_bps: 1_048_576 });
    const progress = screen.getByTestId("download-progress");
    expect(within(progress).getByRole("progressbar")).toHaveAttribute("aria-valuenow", "10");
    expect(screen.getByTestId("download-percent")).toHaveTextContent("10%");
    expect(screen.getByTestId("download-speed")).toHaveTextContent("1.00 MB/s");
    expect(screen.getByTestId("download-eta")).toHaveTextContent("9s left");

    act(() => useModelsStore.getState().applyDownloadProgress({ modelId: 1, progress: 55, downloadedBytes: 5_767_168, totalBytes: 10_485_760, speedBps: 2_097_152 }));
    expect(screen.getByTestId("download-percent")).toHaveTextContent("55%");
    expect(screen.getByTestId("download-speed")).toHaveTextContent("2.00 MB/s");
  });

  it("shows the load stage while loading", () => {
    setup({ status: "loading" });
    act(() => useModelsStore.getState().applyLoadProgress({ modelId: 1, stage: "quantizing", progress: 40 }));
    expect(screen.getByTestId("load-stage")).toHaveTextContent("quantizing");
    expect(within(screen.getByTestId("load-progress")).getByRole("progressbar")).toHaveAttribute("aria-valuenow", "40");
  });

  it("shows memory, device and dtype of the loaded model", () => {
    setup({ status: "loaded", memory_footprint: 12 * 1_048_576, device: "cpu", dtype: "q4k" });
    expect(screen.getByTestId("model-memory")).toHaveTextContent("12 MB");
    expect(screen.getByText("cpu")).toBeInTheDocument();
    expect(screen.getByText("q4k")).toBeInTheDocument();
  });

  it("shows the error message of a failed model", () => {
    setup({ status: "error", error_message: "Download cancelled by user" });
    expect(screen.getByTestId("model-error")).toHaveTextContent("Download cancelled by user");
  });

  it("loads, taking the server's answer", async () => {
    server.use(http.post("*/api/models/1/load", () => ok(makeModel({ status: "loading" }), 202)));
    const { user } = setup({ status: "ready" });
    await user.click(screen.getByRole("button", { name: "Load" }));
    expect(await screen.findByTestId("load-progress")).toBeInTheDocument();
    expect(screen.getByTestId("model-status")).toHaveTextContent("loading");
  });

  it("cancels a download", async () => {
    server.use(
      http.post("*/api/models/1/cancel", () => ok(makeModel({ status: "error", error_message: "Download cancelled by user" }))),
    );
    const { user } = setup({ status: "downloading", download_progress: 5 });
    await user.click(screen.getByRole("button", { name: "Cancel" }));
    expect(await screen.findByTestId("model-error")).toHaveTextContent("Download cancelled by user");
  });

  it("asks before deleting, and Escape keeps the model", async () => {
    const { user } = setup({ status: "ready" });
    const deleteButton = screen.getByRole("button", { name: "Delete" });
    await user.click(deleteButton);
    const dialog = screen.getByRole("dialog", { name: "Delete tiny-llama?" });
    expect(within(dialog).getByRole("button", { name: "Keep" })).toHaveFocus();
    // Focus stays inside the dialog.
    await user.tab();
    expect(within(dialog).getByRole("button", { name: "Delete model" })).toHaveFocus();
    await user.tab();
    expect(within(dialog).getByRole("button", { name: "Keep" })).toHaveFocus();
    await user.keyboard("{Escape}");
    expect(screen.queryByRole("dialog")).not.toBeInTheDocument();
    expect(deleteButton).toHaveFocus();
  });

  it("deletes after confirmation", async () => {
    server.use(http.delete("*/api/models/1", () => ok(null)));
    const { user } = setup({ status: "ready" });
    await user.click(screen.getByRole("button", { name: "Delete" }));
    await user.click(screen.getByRole("button", { name: "Delete model" }));
    expect(await screen.findByText("gone")).toBeInTheDocument();
    expect(useModelsStore.getState().models).toEqual([]);
    expect(screen.getByRole("status")).toHaveTextContent('Deleted "tiny-llama".');
  });

  it("shows a refused action as a toast and refreshes the card", async () => {
    server.use(
      http.post("*/api/models/1/load", () =>
        fail("INSUFFICIENT_MEMORY", "Loading needs 900 MB but only 100 MB is free.", 507, { required_mb: 900, available_mb: 100 }),
      ),
      http.get("*/api/models/1", () => ok(makeModel({ status: "ready" }))),
    );
    const { user } = setup({ status: "ready" });
    await user.click(screen.getByRole("button", { name: "Load" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("Loading needs 900 MB but only 100 MB is free.");
  });

  it("retries with the token typed on the card", async () => {
    const bodies: unknown[] = [];
    server.use(
      http.post("*/api/models/1/retry", async ({ request }) => {
        bodies.push(await request.json());
        return ok(makeModel({ status: "downloading" }), 202);
      }),
    );
    const { user } = setup({ status: "error", error_message: "A token is needed" });
    await user.type(screen.getByLabelText("Hub token (optional)"), "hf_secret");
    await user.click(screen.getByRole("button", { name: "Retry" }));
    await vi.waitFor(() => expect(screen.getByTestId("model-status")).toHaveTextContent("downloading"));
    expect(bodies).toEqual([{ hf_token: "hf_secret" }]);
  });

  it("retries without a token when the field is empty", async () => {
    const bodies: unknown[] = [];
    server.use(
      http.post("*/api/models/1/retry", async ({ request }) => {
        bodies.push(await request.json());
        return ok(makeModel({ status: "downloading" }), 202);
      }),
    );
    const { user } = setup({ status: "error" });
    await user.click(screen.getByRole("button", { name: "Retry" }));
    await vi.waitFor(() => expect(bodies).toEqual([{}]));
  });
});

describe("ModelCard memory fit and model switch", () => {
  const current = makeModel({ id: 9, name: "big-llama", status: "loaded", memory_footprint: 400 * 1_048_576 });

  function renderCard(model: ModelResponse, freeMemoryMb: number | null, loadedModel: ModelResponse | null) {
    useModelsStore.getState().setModels([model]);
    const user = userEvent.setup();
    render(
      <>
        <ModelCard model={model} freeMemoryMb={freeMemoryMb} loadedModel={loadedModel} />
        <Toaster />
      </>,
    );
    return user;
  }

  it("shows that the estimate fits the free memory now", () => {
    renderCard(makeModel({ estimated_memory_mb: 500 }), 1500, null);
    expect(screen.getByTestId("memory-fit")).toHaveTextContent("Fits: needs 500 MB, 1.5 GB free now");
    expect(screen.getByTestId("memory-fit")).toHaveAttribute("data-fits", "true");
  });

  it("counts the loaded model's memory, which the load frees first", () => {
    renderCard(makeModel({ estimated_memory_mb: 500 }), 200, current);
    expect(screen.getByTestId("memory-fit")).toHaveTextContent("Fits: needs 500 MB, 600 MB free once big-llama is unloaded");
  });

  it("says when it does not fit", () => {
    renderCard(makeModel({ estimated_memory_mb: 5000 }), 200, null);
    expect(screen.getByTestId("memory-fit")).toHaveTextContent("Does not fit: needs 4.9 GB, 200 MB free now");
    expect(screen.getByTestId("memory-fit")).toHaveAttribute("data-fits", "false");
  });

  it("shows no fit where nothing can be loaded", () => {
    renderCard(makeModel({ status: "error", estimated_memory_mb: 500, local_path: null }), 1500, null);
    expect(screen.queryByTestId("memory-fit")).not.toBeInTheDocument();
  });

  it("shows no fit without a device figure", () => {
    renderCard(makeModel({ estimated_memory_mb: 500 }), null, null);
    expect(screen.queryByTestId("memory-fit")).not.toBeInTheDocument();
  });

  it("asks before unloading the loaded model, and keeping it sends nothing", async () => {
    const user = renderCard(makeModel({ estimated_memory_mb: 500 }), 200, current);
    await user.click(screen.getByRole("button", { name: "Load" }));
    const dialog = screen.getByRole("dialog", { name: "Unload big-llama and load tiny-llama?" });
    await user.click(within(dialog).getByRole("button", { name: "Keep big-llama" }));
    expect(screen.queryByRole("dialog")).not.toBeInTheDocument();
  });

  it("loads after the switch is confirmed", async () => {
    let loads = 0;
    server.use(
      http.post("*/api/models/1/load", () => {
        loads += 1;
        return ok(makeModel({ status: "loading" }), 202);
      }),
    );
    const user = renderCard(makeModel({ estimated_memory_mb: 500 }), 200, current);
    await user.click(screen.getByRole("button", { name: "Load" }));
    await user.click(within(screen.getByRole("dialog")).getByRole("button", { name: "Unload and load" }));
    await vi.waitFor(() => expect(loads).toBe(1));
    expect(screen.queryByRole("dialog")).not.toBeInTheDocument();
  });

  it("loads at once when nothing is loaded", async () => {
    let loads = 0;
    server.use(
      http.post("*/api/models/1/load", () => {
        loads += 1;
        return ok(makeModel({ status: "loading" }), 202);
      }),
    );
    const user = renderCard(makeModel({ estimated_memory_mb: 500 }), 2000, null);
    await user.click(screen.getByRole("button", { name: "Load" }));
    await vi.waitFor(() => expect(loads).toBe(1));
    expect(screen.queryByRole("dialog")).not.toBeInTheDocument();
  });
});

describe("ModelCard queued download", () => {
  it("says a download waits for a slot until its first bytes arrive", () => {
    const { rerender } = render(<ModelCard model={makeModel({ status: "downloading", queued: true, downloaded_bytes: 0 })} />);
    expect(screen.getByTestId("download-queued")).toHaveTextContent("Waiting for a download slot");
    rerender(<ModelCard model={makeModel({ status: "downloading", queued: false, downloaded_bytes: 10 })} />);
    expect(screen.queryByTestId("download-queued")).not.toBeInTheDocument();
  });
});

describe("ModelCard lock", () => {
  it("locks the loaded model, shows the badge, and unlocks it", async () => {
    const calls: string[] = [];
    server.use(
      http.post("*/api/models/1/lock", () => {
        calls.push("lock");
        return ok(makeModel({ status: "loaded", locked: true, idle_unload_at: null }));
      }),
      http.post("*/api/models/1/unlock", () => {
        calls.push("unlock");
        return ok(makeModel({ status: "loaded", locked: false }));
      }),
    );
    const { user } = setup({ status: "loaded", locked: false });
    expect(screen.queryByTestId("model-locked")).not.toBeInTheDocument();
    await user.click(screen.getByRole("button", { name: "Lock" }));
    expect(await screen.findByTestId("model-locked")).toHaveTextContent("Locked");
    expect(screen.queryByRole("button", { name: "Lock" })).not.toBeInTheDocument();
    await user.click(screen.getByRole("button", { name: "Unlock" }));
    await vi.waitFor(() => expect(screen.queryByTestId("model-locked")).not.toBeInTheDocument());
    expect(screen.getByRole("button", { name: "Lock" })).toBeInTheDocument();
    expect(calls).toEqual(["lock", "unlock"]);
  });

  it("says when the loaded model unloads if left idle", () => {
    const at = new Date();
    at.setHours(14, 5, 0, 0);
    setup({ status: "loaded", idle_unload_at: at.toISOString() });
    expect(screen.getByTestId("idle-unload")).toHaveTextContent("Unloads when idle at 14:05");
  });

  it("shows no lock or idle time on a model that is not loaded", () => {
    setup({ status: "ready", locked: false, idle_unload_at: "2025-01-01T10:00:00Z" });
    expect(screen.queryByTestId("idle-unload")).not.toBeInTheDocument();
    expect(screen.queryByRole("button", { name: "Lock" })).not.toBeInTheDocument();
  });

  it("names the locked model when a load is refused with MODEL_LOCKED", async () => {
    const locked = makeModel({ id: 9, name: "big-llama", status: "loaded", locked: true });
    server.use(
      http.post("*/api/models/1/load", () => fail("MODEL_LOCKED", "Model 9 is locked in memory; unlock it first.", 409, { locked_model_id: 9 })),
      http.get("*/api/models/1", () => ok(makeModel({ status: "ready" }))),
    );
    useModelsStore.getState().setModels([makeModel({ status: "ready" }), locked]);
    const user = userEvent.setup();
    render(
      <>
        <StoreCard id={1} />
        <Toaster />
      </>,
    );
    await user.click(screen.getByRole("button", { name: "Load" }));
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent("a model is locked");
    expect(alert).toHaveTextContent("big-llama is locked in memory: unlock it on its card first.");
  });

  it("warns in the switch dialog that the loaded model is locked", async () => {
    const locked = makeModel({ id: 9, name: "big-llama", status: "loaded", locked: true });
    useModelsStore.getState().setModels([makeModel({ status: "ready" })]);
    const user = userEvent.setup();
    render(<ModelCard model={makeModel({ status: "ready" })} loadedModel={locked} />);
    await user.click(screen.getByRole("button", { name: "Load" }));
    expect(screen.getByTestId("switch-locked")).toHaveTextContent("big-llama is locked in memory");
  });

  it("opens the chat from the loaded model's card", async () => {
    const onChat = vi.fn();
    const user = userEvent.setup();
    render(<ModelCard model={makeModel({ status: "loaded" })} onChat={onChat} />);
    await user.click(screen.getByRole("button", { name: "Chat" }));
    expect(onChat).toHaveBeenCalledWith(expect.objectContaining({ id: 1 }));
  });
});
