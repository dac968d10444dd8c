import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { http, HttpResponse } from "msw";
import { resetApiKey, setApiKey } from "@/lib/api-key";
import { makeModel } from "@/test/fixtures";
import { chatChunk, openAiFail, server, sseStream } from "@/test/server";
import type { ModelResponse } from "../types";
import { ChatPanel } from "./chat-panel";

interface Sent {
  body: Record<string, unknown>;
  authorization: string | null;
  signal: AbortSignal;
}

/** Answers every chat with a stream the test drives, recording each request. */
function streamingServer() {
  const sent: Sent[] = [];
  const streams: ReturnType<typeof sseStream>[] = [];
  server.use(
    http.post("*/v1/chat/completions", async ({ request }) => {
      sent.push({ body: (await request.json()) as Record<string, unknown>, authorization: request.headers.get("Authorization"), signal: request.signal });
      const stream = sseStream();
      streams.push(stream);
      stream.send(chatChunk("")); // the role chunk: no text yet
      return stream.response();
    }),
  );
  return { sent, streams, last: () => streams[streams.length - 1] };
}

function renderPanel(overrides: Partial<ModelResponse> = {}, onAnswered = vi.fn()) {
  const user = userEvent.setup();
  const model = makeModel({ status: "loaded", ...overrides });
  render(<ChatPanel model={model} onAnswered={onAnswered} />);
  return { user, model, onAnswered, message: () => screen.getByRole("textbox", { name: "Message" }) };
}

const answerText = () => screen.getAllByTestId("chat-answer-text").at(-1)!;

afterEach(() => resetApiKey());

describe("ChatPanel", () => {
  it("sends on Enter and streams the answer in, with its figures", async () => {
    const srv = streamingServer();
    const { user, message, onAnswered } = renderPanel();
    await user.type(message(), "Hello there{Enter}");

    await waitFor(() => expect(srv.sent).toHaveLength(1));
    expect(srv.sent[0].body).toEqual({
      model: "tiny-llama",
      messages: [{ role: "user", content: "Hello there" }],
      temperature: 0.7,
      max_tokens: 512,
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(srv.sent[0].authorization).toBeNull();
    expect(message()).toHaveValue("");
    expect(within(screen.getByTestId("chat-question")).getByText("Hello there")).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Stop" })).toBeInTheDocument();

    srv.last().send(chatChunk("Hi"));
    await waitFor(() => expect(answerText()).toHaveTextContent("Hi"));
    // An event split across reads still arrives whole.
    const chunk = `data: ${JSON.stringify(chatChunk(", friend"))}\n\n`;
    srv.last().write(chunk.slice(0, 17));
    srv.last().write(chunk.slice(17));
    await waitFor(() => expect(answerText()).toHaveTextContent("Hi, friend"));
    expect(screen.getByTestId("chat-answer")).toHaveAttribute("data-state", "streaming");

    srv.last().send(chatChunk(null, { finish: "stop" }));
    srv.last().send(chatChunk(null, { usage: { prompt_tokens: 5, completion_tokens: 3 } }));
    srv.last().send("[DONE]");
    await waitFor(() => expect(screen.getByTestId("chat-answer")).toHaveAttribute("data-state", "done"));
    expect(screen.getByRole("button", { name: "Send" })).toBeInTheDocument();
    expect(screen.getByTestId("chat-ttft")).toHaveTextContent(/\d+ ms|\d\.\d\d s/);
    expect(screen.getByTestId("chat-tps")).toHaveTextContent(/^(\d+\.\d|—)$/);
    expect(screen.getByTestId("chat-stats")).toHaveTextContent("Tokens3");
    expect(onAnswered).toHaveBeenCalledTimes(1);
  });

  it("starts a new line on Shift+Enter without sending", async () => {
    const srv = streamingServer();
    const { user, message } = renderPanel();
    await user.type(message(), "line one{Shift>}{Enter}{/Shift}line two");
    expect(message()).toHaveValue("line one\nline two");
    expect(srv.sent).toHaveLength(0);
    await user.click(screen.getByRole("button", { name: "Send" }));
    await waitFor(() => expect(srv.sent).toHaveLength(1));
    expect(srv.sent[0].body.messages).toEqual([{ role: "user", content: "line one\nline two" }]);
  });

  it("sends nothing for an empty message", async () => {
    const srv = streamingServer();
    const { user, message } = renderPanel();
    await user.type(message(), "   {Enter}");
    expect(srv.sent).toHaveLength(0);
  });

  it("stops the generation: the request is aborted and the partial answer kept", async () => {
    const srv = streamingServer();
    const { user, message } = renderPanel();
    await user.type(message(), "Tell me a long story{Enter}");
    await waitFor(() => expect(srv.sent).toHaveLength(1));
    srv.last().send(chatChunk("Once upon"));
    await waitFor(() => expect(answerText()).toHaveTextContent("Once upon"));

    await user.click(screen.getByRole("button", { name: "Stop" }));
    await waitFor(() => expect(screen.getByTestId("chat-answer")).toHaveAttribute("data-state", "stopped"));
    expect(srv.sent[0].signal.aborted || srv.last().cancelled).toBe(true);
    srv.last().send(chatChunk(" a time")); // too late: nobody reads it
    expect(answerText()).toHaveTextContent(/^Once upon$/);
    expect(screen.getByText("Stopped.")).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Send" })).toBeInTheDocument();
    expect(message()).toHaveFocus();
  });

  it("stops on Escape while an answer streams", async () => {
    const srv = streamingServer();
    const { user, message } = renderPanel();
    await user.type(message(), "Go{Enter}");
    await waitFor(() => expect(srv.sent).toHaveLength(1));
    expect(screen.getByRole("button", { name: "Stop" })).toBeInTheDocument();
    await user.keyboard("{Escape}");
    await waitFor(() => expect(screen.getByTestId("chat-answer")).toHaveAttribute("data-state", "stopped"));
    expect(screen.getByText("Stopped before any text arrived.")).toBeInTheDocument();
  });

  it("keeps the conversation and sends it with the system prompt and settings", async () => {
    const srv = streamingServer();
    const { user, message } = renderPanel();
    await user.click(screen.getByText("Settings"));
    await user.type(screen.getByRole("textbox", { name: "System prompt" }), "Be brief.");
    await user.clear(screen.getByRole("spinbutton", { name: "Temperature" }));
    await user.type(screen.getByRole("spinbutton", { name: "Temperature" }), "0");
    await user.clear(screen.getByRole("spinbutton", { name: "Max tokens" }));
    await user.type(screen.getByRole("spinbutton", { name: "Max tokens" }), "64");

    await user.type(message(), "First?{Enter}");
    await waitFor(() => expect(srv.sent).toHaveLength(1));
    srv.last().send(chatChunk("One."));
    srv.last().send("[DONE]");
    await waitFor(() => expect(screen.getByTestId("chat-answer")).toHaveAttribute("data-state", "done"));

    await user.type(message(), "Second?{Enter}");
    await waitFor(() => expect(srv.sent).toHaveLength(2));
    expect(srv.sent[1].body).toMatchObject({
      temperature: 0,
      max_tokens: 64,
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "First?" },
        { role: "assistant", content: "One." },
        { role: "user", content: "Second?" },
      ],
    });
    expect(screen.getAllByTestId("chat-question")).toHaveLength(2);
    srv.last().end();
  });

  it("refuses to send while a setting is out of range", async () => {
    const srv = streamingServer();
    const { user, message } = renderPanel();
    await user.click(screen.getByText("Settings"));
    await user.clear(screen.getByRole("spinbutton", { name: "Temperature" }));
    await user.type(screen.getByRole("spinbutton", { name: "Temperature" }), "5");
    expect(screen.getByText("A number from 0 to 2.")).toBeInTheDocument();
    await user.type(message(), "Hi{Enter}");
    expect(screen.getByRole("button", { name: "Send" })).toBeDisabled();
    expect(srv.sent).toHaveLength(0);
  });

  it("sends the page's API key", async () => {
    setApiKey("sekret", false);
    const srv = streamingServer();
    const { user, message } = renderPanel();
    await user.type(message(), "Hi{Enter}");
    await waitFor(() => expect(srv.sent).toHaveLength(1));
    expect(srv.sent[0].authorization).toBe("Bearer sekret");
    srv.last().end();
  });

  it("shows the server's message when the request is refused", async () => {
    server.use(
      http.post("*/v1/chat/completions", () =>
        openAiFail("The prompt and max_tokens exceed the model's context of 2048 tokens.", "invalid_request_error", "context_length_exceeded", 400),
      ),
    );
    const { user, message } = renderPanel();
    await user.type(message(), "Hi{Enter}");
    expect(await screen.findByRole("alert")).toHaveTextContent("The prompt and max_tokens exceed the model's context of 2048 tokens.");
    expect(screen.getByTestId("chat-answer")).toHaveAttribute("data-state", "error");
    expect(screen.getByRole("button", { name: "Send" })).toBeInTheDocument();
  });

  it("shows an error that arrives mid-stream, keeping the text before it", async () => {
    const srv = streamingServer();
    const { user, message } = renderPanel();
    await user.type(message(), "Hi{Enter}");
    await waitFor(() => expect(srv.sent).toHaveLength(1));
    srv.last().send(chatChunk("Partial"));
    srv.last().send({ error: { message: "The generation stopped unexpectedly.", type: "server_error", param: null, code: null } });
    srv.last().send("[DONE]");
    expect(await screen.findByRole("alert")).toHaveTextContent("The generation stopped unexpectedly.");
    expect(answerText()).toHaveTextContent("Partial");
  });

  it("says a stream cut short ended early", async () => {
    const srv = streamingServer();
    const { user, message } = renderPanel();
    await user.type(message(), "Hi{Enter}");
    await waitFor(() => expect(srv.sent).toHaveLength(1));
    srv.last().send(chatChunk("Part"));
    srv.last().end();
    expect(await screen.findByRole("alert")).toHaveTextContent("The answer ended before the server finished it.");
  });

  it("says the model cannot generate, and offers no message box", () => {
    renderPanel({ supports_inference: false, architecture: "BertModel", name: "bert-mini" });
    expect(screen.getByTestId("chat-unsupported")).toHaveTextContent("bert-mini cannot generate text");
    expect(screen.getByTestId("chat-unsupported")).toHaveTextContent("BertModel");
    expect(screen.queryByRole("textbox", { name: "Message" })).not.toBeInTheDocument();
  });

  it("clears the conversation", async () => {
    const srv = streamingServer();
    const { user, message } = renderPanel();
    await user.type(message(), "Hi{Enter}");
    await waitFor(() => expect(srv.sent).toHaveLength(1));
    srv.last().send(chatChunk("Yo"));
    srv.last().send("[DONE]");
    await waitFor(() => expect(screen.getByTestId("chat-answer")).toHaveAttribute("data-state", "done"));
    await user.click(screen.getByRole("button", { name: "Clear conversation" }));
    expect(screen.queryByTestId("chat-answer")).not.toBeInTheDocument();
    expect(message()).toHaveFocus();
  });

  it("starts a new conversation with another model", async () => {
    const srv = streamingServer();
    const user = userEvent.setup();
    const { rerender } = render(<ChatPanel model={makeModel({ status: "loaded" })} />);
    await user.type(screen.getByRole("textbox", { name: "Message" }), "Hi{Enter}");
    await waitFor(() => expect(srv.sent).toHaveLength(1));
    rerender(<ChatPanel model={makeModel({ id: 2, name: "other", status: "loaded" })} />);
    await waitFor(() => expect(screen.queryByTestId("chat-question")).not.toBeInTheDocument());
    expect(screen.getByRole("heading", { name: "Chat with other" })).toBeInTheDocument();
  });

  it("puts the message box in focus when asked", () => {
    const model = makeModel({ status: "loaded" });
    const { rerender } = render(<ChatPanel model={model} focusRequest={0} />);
    expect(screen.getByRole("textbox", { name: "Message" })).not.toHaveFocus();
    rerender(<ChatPanel model={model} focusRequest={1} />);
    expect(screen.getByRole("textbox", { name: "Message" })).toHaveFocus();
  });

  it("reports an unreachable server", async () => {
    server.use(http.post("*/v1/chat/completions", () => HttpResponse.error()));
    const { user, message } = renderPanel();
    await user.type(message(), "Hi{Enter}");
    expect(await screen.findByRole("alert")).toHaveTextContent("Cannot reach the miLLM server");
  });
});
