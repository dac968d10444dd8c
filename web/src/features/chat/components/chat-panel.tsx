//! The chat with the loaded model: the conversation, its answer streaming in, Stop (also
//! Escape) while it streams, the settings of the next answer (system prompt, temperature,
//! max tokens), and the time to first token and tokens per second of the last answer.
//! Enter sends, Shift+Enter starts a new line.
import { useEffect, useId, useLayoutEffect, useRef, useState, type FormEvent, type KeyboardEvent } from "react";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Input } from "@/components/ui/input";
import { Textarea } from "@/components/ui/textarea";
import { clearChat, holdConversationWith, parseSettings, sendMessage, stopAnswer } from "../api/chat-actions";
import { useChatStore } from "../stores/chat-store";
import type { AnswerStats, ChatTurn, ModelResponse } from "../types";

export interface ChatPanelProps {
  /** The loaded model (its `name` is the request's `model`). */
  model: ModelResponse;
  /** Each change (after the first) moves the focus to the message box and shows the panel. */
  focusRequest?: number;
  /** An answer ended (the server's idle timer and figures moved): refresh the model. */
  onAnswered?: () => void;
}

/** How close to the end the conversation must be scrolled to follow a streaming answer. */
const FOLLOW_SLACK_PX = 40;

export function ChatPanel({ model, focusRequest = 0, onAnswered }: ChatPanelProps) {
  const headingId = useId();
  const turns = useChatStore((s) => s.turns);
  const streaming = useChatStore((s) => s.streaming);
  const settings = useChatStore((s) => s.settings);
  const setSettings = useChatStore((s) => s.setSettings);
  const stats = useChatStore((s) => s.stats);
  const [draft, setDraft] = useState("");
  const inputRef = useRef<HTMLTextAreaElement>(null);
  const logRef = useRef<HTMLDivElement>(null);
  const panelRef = useRef<HTMLElement>(null);
  // Follow the answer while the reader is at the end; leave them be once they scroll up.
  const follow = useRef(true);
  const { errors } = parseSettings(settings);
  const invalid = Object.keys(errors).length > 0;

  useEffect(() => holdConversationWith(model.id), [model.id]);
  // The panel goes (the model was unloaded): nothing is left to read the answer.
  useEffect(() => () => stopAnswer(), []);

  useEffect(() => {
    if (focusRequest === 0) return;
    panelRef.current?.scrollIntoView?.({ block: "start", behavior: "smooth" });
    inputRef.current?.focus({ preventScroll: true });
  }, [focusRequest]);

  useLayoutEffect(() => {
    const log = logRef.current;
    if (log && follow.current) log.scrollTop = log.scrollHeight;
  }, [turns]);

  const send = () => {
    if (streaming || draft.trim() === "" || invalid || !model.supports_inference) return;
    const question = draft;
    setDraft("");
    follow.current = true;
    void sendMessage(model.name, question, onAnswered);
    inputRef.current?.focus();
  };
  const stop = () => {
    stopAnswer();
    inputRef.current?.focus();
  };

  const onSubmit = (event: FormEvent) => {
    event.preventDefault();
    send();
  };
  const onMessageKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    // Enter sends; Shift+Enter (the default) starts a new line; an IME composing text keeps Enter.
    if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
      event.preventDefault();
      send();
    }
  };
  const onPanelKeyDown = (event: KeyboardEvent<HTMLElement>) => {
    if (event.key === "Escape" && streaming) {
      event.preventDefault();
      stop();
    }
  };

  const last = turns.at(-1);

  return (
    <Card
      as="section"
      className="chat-panel"
      aria-labelledby={headingId}
      data-testid="chat-panel"
      ref={panelRef}
      onKeyDown={onPanelKeyDown}
    >
      <div className="section-head">
        <h2 id={headingId} className="card-title">
          Chat with <span className="chat-model-name">{model.name}</span>
        </h2>
        {model.supports_inference && (
          <Button
            variant="ghost"
            size="sm"
            disabled={turns.length === 0}
            onClick={() => {
              clearChat();
              inputRef.current?.focus();
            }}
          >
            Clear conversation
          </Button>
        )}
      </div>

      {!model.supports_inference ? (
        <p className="chat-unsupported" data-testid="chat-unsupported">
          {model.name} cannot generate text: this server has no text generation for its architecture
          {model.architecture ? ` (${model.architecture})` : ""}. Load a model of a supported architecture to chat.
        </p>
      ) : (
        <>
          <details className="chat-settings">
            <summary>
              Settings{" "}
              <span className="muted">
                · temperature {settings.temperature || "default"} · max tokens {settings.maxTokens || "default"}
                {settings.systemPrompt.trim() ? " · system prompt" : ""}
              </span>
            </summary>
            <div className="chat-settings-grid">
              <Textarea
                label="System prompt"
                className="span-2"
                rows={2}
                value={settings.systemPrompt}
                placeholder="You are a helpful assistant."
                onChange={(e) => setSettings({ systemPrompt: e.target.value })}
                hint="Sent first with every question; empty sends none."
              />
              <Input
                label="Temperature"
                type="number"
                inputMode="decimal"
                min={0}
                max={2}
                step={0.1}
                value={settings.temperature}
                onChange={(e) => setSettings({ temperature: e.target.value })}
                error={errors.temperature}
                hint="0 always picks the likeliest token."
              />
              <Input
                label="Max tokens"
                type="number"
                inputMode="numeric"
                min={1}
                step={1}
                value={settings.maxTokens}
                onChange={(e) => setSettings({ maxTokens: e.target.value })}
                error={errors.maxTokens}
                hint="The longest answer; empty lets the server decide."
              />
            </div>
          </details>

          <div
            className="chat-log"
            ref={logRef}
            tabIndex={0}
            role="region"
            aria-label="Conversation"
            data-testid="chat-log"
            onScroll={(e) => {
              const el = e.currentTarget;
              follow.current = el.scrollHeight - el.scrollTop - el.clientHeight <= FOLLOW_SLACK_PX;
            }}
          >
            {turns.length === 0 ? (
              <p className="chat-empty muted">No messages yet. Ask {model.name} something below.</p>
            ) : (
              <ol className="chat-turns">
                {turns.map((turn) => (
                  <Turn key={turn.id} turn={turn} modelName={model.name} />
                ))}
              </ol>
            )}
          </div>

          <p className="sr-only" role="status">
            {streaming ? `${model.name} is answering. Press Escape to stop.` : last?.state === "stopped" ? "Answer stopped." : last?.state === "done" && last.role === "assistant" ? "Answer complete." : ""}
          </p>

          <AnswerFigures stats={stats} />

          <form className="chat-composer" onSubmit={onSubmit}>
            <Textarea
              ref={inputRef}
              label="Message"
              className="chat-message"
              rows={3}
              value={draft}
              onChange={(e) => setDraft(e.target.value)}
              onKeyDown={onMessageKeyDown}
              placeholder={`Message ${model.name}`}
              hint={streaming ? "Escape or Stop ends the answer." : "Enter sends; Shift+Enter starts a new line."}
            />
            <div className="chat-composer-actions">
              {streaming ? (
                <Button variant="danger" onClick={stop} data-testid="chat-stop">
                  Stop
                </Button>
              ) : (
                <Button type="submit" variant="primary" disabled={invalid} data-testid="chat-send">
                  Send
                </Button>
              )}
            </div>
          </form>
        </>
      )}
    </Card>
  );
}

function Turn({ turn, modelName }: { turn: ChatTurn; modelName: string }) {
  const isAnswer = turn.role === "assistant";
  return (
    <li
      className={`chat-turn chat-turn-${turn.role}`}
      data-testid={isAnswer ? "chat-answer" : "chat-question"}
      data-state={turn.state}
    >
      <span className="chat-role">{isAnswer ? modelName : "You"}</span>
      {(turn.content !== "" || turn.state === "streaming") && (
        <div className="chat-text" data-testid={isAnswer ? "chat-answer-text" : undefined}>
          {turn.content}
          {turn.state === "streaming" && <span className="chat-cursor" aria-hidden="true" />}
        </div>
      )}
      {turn.state === "stopped" && <p className="chat-note">Stopped{turn.content === "" ? " before any text arrived" : ""}.</p>}
      {turn.state === "done" && turn.finishReason === "length" && <p className="chat-note">Ended at the max tokens.</p>}
      {turn.state === "error" && (
        <p className="chat-error" role="alert" data-testid="chat-error">
          {turn.error}
        </p>
      )}
    </li>
  );
}

/** Time to first token and tokens per second of the last answer. */
function AnswerFigures({ stats }: { stats: AnswerStats | null }) {
  if (!stats) return null;
  const approx = stats.approximate ? "≈ " : "";
  return (
    <dl className="chat-figures" data-testid="chat-stats">
      <div>
        <dt>Time to first token</dt>
        <dd data-testid="chat-ttft">{stats.ttftMs === null ? "—" : formatMs(stats.ttftMs)}</dd>
      </div>
      <div>
        <dt>Tokens/s</dt>
        <dd data-testid="chat-tps" title={stats.approximate ? "The answer was stopped: its pieces were counted, not its tokens." : undefined}>
          {stats.tokensPerSecond === null ? "—" : `${approx}${stats.tokensPerSecond.toFixed(1)}`}
        </dd>
      </div>
      {stats.completionTokens !== null && (
        <div>
          <dt>Tokens</dt>
          <dd>
            {approx}
            {stats.completionTokens.toLocaleString("en-US")}
          </dd>
        </div>
      )}
    </dl>
  );
}

function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}
