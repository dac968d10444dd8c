import { createSseParser, type SseEvent } from "./sse";

function parse(pieces: string[]): SseEvent[] {
  const events: SseEvent[] = [];
  const parser = createSseParser((e) => events.push(e));
  for (const p of pieces) parser.feed(p);
  return events;
}

describe("createSseParser", () => {
  it("hands over each event's data when its blank line arrives", () => {
    expect(parse(['data: {"a":1}\n\ndata: [DONE]\n\n'])).toEqual([
      { event: "message", data: '{"a":1}' },
      { event: "message", data: "[DONE]" },
    ]);
  });

  it("joins events split anywhere across pieces, even inside a CRLF", () => {
    const stream = 'data: {"x":"héllo"}\r\n\r\ndata: second\r\n\r\n';
    for (let cut = 1; cut < stream.length; cut++) {
      expect(parse([stream.slice(0, cut), stream.slice(cut)])).toEqual([
        { event: "message", data: '{"x":"héllo"}' },
        { event: "message", data: "second" },
      ]);
    }
    expect(parse(stream.split(""))).toHaveLength(2);
  });

  it("accepts CR line ends, a BOM, no space after the colon, and multi-line data", () => {
    expect(parse(["\uFEFFdata:one\rdata: two\r\r"])).toEqual([{ event: "message", data: "one\ntwo" }]);
  });

  it("skips comments and events without data, and keeps the event name", () => {
    expect(parse([": keep-alive\n\nid: 3\n\nevent: ping\ndata: x\n\n"])).toEqual([{ event: "ping", data: "x" }]);
  });

  it("holds an unfinished event back until its blank line", () => {
    const events: SseEvent[] = [];
    const parser = createSseParser((e) => events.push(e));
    parser.feed("data: par");
    parser.feed("tial\n");
    expect(events).toEqual([]);
    parser.feed("\n");
    expect(events).toEqual([{ event: "message", data: "partial" }]);
  });
});
