import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { http } from "msw";
import { useModelsStore } from "../stores/models-store";
import { LocalForm } from "./local-form";
import { ok, server } from "@/test/server";
import { makeModel } from "@/test/fixtures";

describe("LocalForm", () => {
  it("wants an absolute path, then registers the folder", async () => {
    let body: unknown;
    server.use(
      http.post("*/api/models", async ({ request }) => {
        body = await request.json();
        return ok(makeModel({ id: 4, source: "local", local_path: "/models/llama", repo_id: null }), 202);
      }),
    );
    const user = userEvent.setup();
    render(<LocalForm />);
    const path = screen.getByLabelText("Folder path");
    await user.type(path, "models/llama");
    await user.click(screen.getByRole("button", { name: "Register" }));
    expect(screen.getByText(/must be absolute/)).toBeInTheDocument();
    await user.clear(path);
    await user.type(path, "/models/llama");
    await user.selectOptions(screen.getByLabelText("Quantization"), "FP16");
    await user.type(screen.getByLabelText("Display name (optional)"), "My llama");
    await user.click(screen.getByRole("button", { name: "Register" }));
    await vi.waitFor(() => expect(useModelsStore.getState().models).toHaveLength(1));
    expect(body).toEqual({ source: "local", local_path: "/models/llama", quantization: "FP16", custom_name: "My llama" });
    expect(path).toHaveValue("");
  });
});
