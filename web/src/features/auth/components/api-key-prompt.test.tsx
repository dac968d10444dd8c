// The key prompt against the real API client: a 401 opens it, the key is kept and sent.
import { act, render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { http } from "msw";
import { request } from "@/lib/api-client";
import { getApiKey, resetApiKey } from "@/lib/api-key";
import { fail, ok, server } from "@/test/server";
import { ApiKeyPrompt } from "./api-key-prompt";

afterEach(() => {
  act(() => resetApiKey());
  window.localStorage.clear();
  window.sessionStorage.clear();
});

/** A request the server refuses for want of the key (its 401 updates the prompt: inside act). */
async function refused() {
  await act(async () => {
    await expect(request("GET", "/api/models")).rejects.toMatchObject({ status: 401, code: "UNAUTHORIZED" });
  });
}

function refuseWithoutKey(key: string) {
  server.use(
    http.get("*/api/models", ({ request: req }) =>
      req.headers.get("authorization") === `Bearer ${key}`
        ? ok([])
        : fail("UNAUTHORIZED", "This server needs an API key.", 401),
    ),
  );
}

describe("ApiKeyPrompt", () => {
  it("stays hidden until the API answers 401", async () => {
    server.use(http.get("*/api/models", () => ok([])));
    render(<ApiKeyPrompt onSaved={vi.fn()} />);
    await request("GET", "/api/models");
    expect(screen.queryByTestId("api-key-prompt")).not.toBeInTheDocument();
  });

  it("asks for the key on a 401, keeps it for the session and sends it", async () => {
    refuseWithoutKey("s3cret");
    const onSaved = vi.fn();
    render(<ApiKeyPrompt onSaved={onSaved} />);
    await refused();
    const prompt = await screen.findByTestId("api-key-prompt");
    expect(prompt).toBeInTheDocument();

    await userEvent.type(screen.getByLabelText("API key"), "s3cret");
    await userEvent.click(screen.getByRole("button", { name: "Unlock" }));

    expect(onSaved).toHaveBeenCalledOnce();
    expect(screen.queryByTestId("api-key-prompt")).not.toBeInTheDocument();
    expect(window.sessionStorage.getItem("millm.apiKey")).toBe("s3cret");
    expect(window.localStorage.getItem("millm.apiKey")).toBeNull();
    await expect(request("GET", "/api/models")).resolves.toEqual([]);
  });

  it("remembers the key in this browser when asked", async () => {
    refuseWithoutKey("k");
    render(<ApiKeyPrompt onSaved={vi.fn()} />);
    await refused();
    await userEvent.type(await screen.findByLabelText("API key"), "k");
    await userEvent.click(screen.getByLabelText("Remember on this browser"));
    await userEvent.click(screen.getByRole("button", { name: "Unlock" }));
    expect(window.localStorage.getItem("millm.apiKey")).toBe("k");
    expect(getApiKey()).toBe("k");
  });

  it("does not accept an empty key", async () => {
    refuseWithoutKey("k");
    const onSaved = vi.fn();
    render(<ApiKeyPrompt onSaved={onSaved} />);
    await refused();
    await userEvent.click(await screen.findByRole("button", { name: "Unlock" }));
    expect(onSaved).not.toHaveBeenCalled();
    expect(screen.getByText(/MILLM_API_KEY/, { selector: ".field-error" })).toBeInTheDocument();
  });
});
