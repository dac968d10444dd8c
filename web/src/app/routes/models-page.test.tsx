import { act, render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { http } from "msw";
import { App } from "../app";
import { useSystemStore } from "@/features/system/stores/system-store";
import { connectSocket } from "@/lib/socket";
import { fail, ok, server } from "@/test/server";
import { makeHealth, makeModel } from "@/test/fixtures";

describe("ModelsPage", () => {
  it("lists the models newest first and opens the live channel", async () => {
    server.use(
      http.get("*/api/models", () =>
        ok([
          makeModel({ id: 1, name: "older", created_at: "2025-01-01T00:00:00Z" }),
          makeModel({ id: 2, name: "newer", created_at: "2025-02-01T00:00:00Z", status: "loaded", memory_footprint: 1_048_576 * 30 }),
        ]),
      ),
      http.get("*/api/health", () => ok(makeHealth())),
    );
    render(<App />);
    const list = await screen.findByTestId("model-list");
    await within(list).findByText("older");
    const names = within(list).getAllByRole("heading", { level: 3 }).map((h) => h.textContent);
    expect(names).toEqual(["newer", "older"]);
    expect(screen.getByText("2 models")).toBeInTheDocument();
    expect(connectSocket).toHaveBeenCalled();
    expect(await screen.findByTestId("device-name")).toHaveTextContent("cpu");
    expect(screen.getByTestId("memory-info")).toHaveTextContent("14.2 GB / 15.6 GB");
  });

  it("shows a failed list request as a toast with the server's message", async () => {
    server.use(
      http.get("*/api/models", () => fail("INTERNAL_ERROR", "The database is unavailable.", 500)),
      http.get("*/api/health", () => ok(makeHealth())),
    );
    render(<App />);
    expect(await screen.findByRole("alert")).toHaveTextContent("The database is unavailable.");
    expect(screen.getByTestId("models-error")).toBeInTheDocument();
  });

  it("shows the device, its memory, GPU memory and the channel state from metrics", async () => {
    server.use(http.get("*/api/models", () => ok([])), http.get("*/api/health", () => ok(makeHealth())));
    render(<App />);
    expect(await screen.findByTestId("models-empty")).toBeInTheDocument();
    act(() => {
      useSystemStore.getState().setMetrics({
        gpu_utilization: 10,
        gpu_memory_used_mb: 2048,
        gpu_memory_total_mb: 8192,
        gpu_temperature: 50,
        device: "cuda:0",
        memory_total_mb: 8192,
        memory_free_mb: 6144,
      });
      useSystemStore.getState().setConnection("reconnecting");
    });
    expect(screen.getByTestId("device-name")).toHaveTextContent("cuda:0");
    expect(screen.getByTestId("memory-info")).toHaveTextContent("2.0 GB / 8.0 GB");
    expect(screen.getByTestId("gpu-info")).toHaveTextContent("2.0 GB / 8.0 GB");
    expect(screen.getByTestId("connection-state")).toHaveTextContent("Reconnecting…");
  });

  it("shows the chat with the loaded model, and its card's Chat button moves there", async () => {
    server.use(
      http.get("*/api/models", () => ok([makeModel({ id: 2, name: "newer", status: "loaded" }), makeModel({ id: 1, name: "older" })])),
      http.get("*/api/health", () => ok(makeHealth())),
    );
    const user = userEvent.setup();
    render(<App />);
    const panel = await screen.findByTestId("chat-panel");
    expect(within(panel).getByRole("heading", { name: "Chat with newer" })).toBeInTheDocument();
    await user.click(screen.getByRole("button", { name: "Chat" }));
    expect(within(panel).getByRole("textbox", { name: "Message" })).toHaveFocus();
  });

  it("shows no chat while no model is loaded", async () => {
    server.use(http.get("*/api/models", () => ok([makeModel()])), http.get("*/api/health", () => ok(makeHealth())));
    render(<App />);
    await screen.findByText("tiny-llama");
    expect(screen.queryByTestId("chat-panel")).not.toBeInTheDocument();
  });
});
