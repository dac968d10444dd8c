import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { http } from "msw";
import { Toaster } from "@/components/ui/toast";
import { useModelsStore } from "../stores/models-store";
import { DownloadForm } from "./download-form";
import { fail, ok, server } from "@/test/server";
import { makeModel, makePreview } from "@/test/fixtures";

function setup(freeMemoryMb: number | null = 1500) {
  const user = userEvent.setup();
  render(
    <>
      <DownloadForm freeMemoryMb={freeMemoryMb} />
      <Toaster />
    </>,
  );
  return { user, repo: screen.getByLabelText("Repository") };
}

describe("DownloadForm", () => {
  it("shows the repo id rule inline and sends nothing while it is broken", async () => {
    const { user, repo } = setup();
    await user.type(repo, "org/mo--del");
    await user.tab();
    expect(screen.getByText(/must not contain "--"/)).toBeInTheDocument();
    expect(repo).toHaveAttribute("aria-invalid", "true");
    await user.click(screen.getByRole("button", { name: "Preview" }));
    await user.click(screen.getByRole("button", { name: "Download" }));
    // No handler is registered: a request would fail the test (onUnhandledRequest: "error").
    await user.clear(repo);
    await user.type(repo, "org/model");
    expect(screen.queryByText(/must not contain/)).not.toBeInTheDocument();
  });

  it("defaults to Q4, main and a password field for the token", () => {
    setup();
    expect(screen.getByLabelText("Quantization")).toHaveValue("Q4");
    expect(screen.getByLabelText("Revision")).toHaveValue("main");
    expect(screen.getByLabelText("Access token (optional)")).toHaveAttribute("type", "password");
  });

  it("renders the preview and marks quantizations that won't fit", async () => {
    let body: unknown;
    server.use(
      http.post("*/api/models/preview", async ({ request }) => {
        body = await request.json();
        return ok(makePreview());
      }),
    );
    const { user, repo } = setup(1500);
    await user.type(repo, "test-org/tiny-llama");
    await user.type(screen.getByLabelText("Access token (optional)"), "hf_secret");
    await user.click(screen.getByRole("button", { name: "Preview" }));

    const card = await screen.findByTestId("preview-card");
    expect(body).toEqual({ repo_id: "test-org/tiny-llama", hf_token: "hf_secret" });
    expect(within(card).getByRole("heading", { name: "tiny-llama" })).toBeInTheDocument();
    expect(within(card).getByText("4.2M")).toBeInTheDocument();
    expect(within(card).getAllByText("LlamaForCausalLM").length).toBeGreaterThan(0);
    expect(within(card).getByText("apache-2.0")).toBeInTheDocument();
    expect(within(card).getByText("model.safetensors")).toBeInTheDocument();
    expect(within(card).getByText("Open")).toBeInTheDocument();

    expect(within(screen.getByTestId("estimate-FP32")).getByText("won't fit")).toBeInTheDocument();
    expect(within(screen.getByTestId("estimate-FP16")).getByText("won't fit")).toBeInTheDocument();
    expect(within(screen.getByTestId("estimate-Q8")).getByText("fits")).toBeInTheDocument();
    expect(within(screen.getByTestId("estimate-Q4")).getByText("fits")).toBeInTheDocument();
    expect(screen.getByTestId("estimate-Q4")).toHaveAttribute("aria-current", "true");
  });

  it("shows the gated flag of a gated repo", async () => {
    server.use(http.post("*/api/models/preview", () => ok(makePreview({ is_gated: true, has_access: false }))));
    const { user, repo } = setup(null);
    await user.type(repo, "test-org/gated-llama");
    await user.click(screen.getByRole("button", { name: "Preview" }));
    const card = await screen.findByTestId("preview-card");
    expect(within(card).getByText("Gated", { selector: ".badge" })).toBeInTheDocument();
    expect(within(card).getByText("No access")).toBeInTheDocument();
    expect(within(screen.getByTestId("estimate-FP32")).getByText("unknown")).toBeInTheDocument();
  });

  it("shows a preview error as a toast with the server's message", async () => {
    server.use(
      http.post("*/api/models/preview", () =>
        fail("GATED_MODEL_NO_TOKEN", "Model 'test-org/gated-llama' is gated. Provide an access token.", 401),
      ),
    );
    const { user, repo } = setup();
    await user.type(repo, "test-org/gated-llama");
    await user.click(screen.getByRole("button", { name: "Preview" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("Model 'test-org/gated-llama' is gated. Provide an access token.");
    expect(screen.queryByTestId("preview-card")).not.toBeInTheDocument();
  });

  it("starts a download with the chosen options and clears the token", async () => {
    let body: unknown;
    server.use(
      http.post("*/api/models", async ({ request }) => {
        body = await request.json();
        return ok(makeModel({ id: 9, status: "downloading", quantization: "Q8", name: "Mine" }), 202);
      }),
    );
    const { user, repo } = setup();
    await user.type(repo, "test-org/tiny-llama");
    await user.selectOptions(screen.getByLabelText("Quantization"), "Q8");
    await user.type(screen.getByLabelText("Access token (optional)"), "hf_secret");
    await user.type(screen.getByLabelText("Display name (optional)"), "Mine");
    await user.click(screen.getByRole("button", { name: "Download" }));

    expect(await screen.findByText('Downloading "Mine".')).toBeInTheDocument();
    expect(body).toEqual({
      source: "huggingface",
      repo_id: "test-org/tiny-llama",
      revision: "main",
      quantization: "Q8",
      hf_token: "hf_secret",
      custom_name: "Mine",
    });
    expect(useModelsStore.getState().models.map((m) => m.id)).toEqual([9]);
    expect(screen.getByLabelText("Access token (optional)")).toHaveValue("");
    expect(localStorage.length).toBe(0);
  });
});
