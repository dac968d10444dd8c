//! A small incremental parser of server-sent events (the `text/event-stream` format of the
//! HTML standard, https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
//! fed text as it arrives, in pieces split anywhere (even inside a line or a CRLF), it hands
//! each complete event's `data` to the caller. OpenAI's streams only use `data:` lines.

/** One dispatched event: its `event` name ("message" when unnamed) and its joined `data` lines. */
export interface SseEvent {
  event: string;
  data: string;
}

/** Feeds text in and gets events out. */
export interface SseParser {
  /** Parses one piece of the stream; calls `onEvent` for every event it completes. */
  feed(text: string): void;
  /** The stream ended: an event without its closing blank line is dropped, as the standard says. */
  reset(): void;
}

export function createSseParser(onEvent: (event: SseEvent) => void): SseParser {
  let buffer = "";
  let data: string[] = [];
  let event = "";
  let started = false;
  // A CR ended the last piece: a LF starting the next one belongs to the same line end.
  let skipLf = false;

  function line(text: string) {
    if (text === "") {
      if (data.length > 0) onEvent({ event: event || "message", data: data.join("\n") });
      data = [];
      event = "";
      return;
    }
    if (text.startsWith(":")) return; // a comment (keep-alive)
    const colon = text.indexOf(":");
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") data.push(value);
    else if (field === "event") event = value;
    // `id` and `retry` do not matter to a fetch-based reader.
  }

  return {
    feed(text: string) {
      if (!started && text.length > 0) {
        started = true;
        if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      }
      if (skipLf && text.startsWith("\n")) text = text.slice(1);
      skipLf = false;
      buffer += text;
      let start = 0;
      for (let i = 0; i < buffer.length; i++) {
        const c = buffer[i];
        if (c !== "\n" && c !== "\r") continue;
        line(buffer.slice(start, i));
        if (c === "\r") {
          if (i + 1 === buffer.length) skipLf = true;
          else if (buffer[i + 1] === "\n") i++;
        }
        start = i + 1;
      }
      buffer = buffer.slice(start);
    },
    reset() {
      buffer = "";
      data = [];
      event = "";
      skipLf = false;
      started = false;
    },
  };
}
