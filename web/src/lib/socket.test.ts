// socket.ts itself, with socket.io-client replaced by an in-memory emitter.
import type { ConnectionState } from "./socket";

vi.unmock("@/lib/socket");

type Handler = (...args: unknown[]) => void;

class FakeEmitter {
  handlers = new Map<string, Handler[]>();
  on(event: string, handler: Handler) {
    this.handlers.set(event, [...(this.handlers.get(event) ?? []), handler]);
    return this;
  }
  fire(event: string, ...args: unknown[]) {
    for (const h of this.handlers.get(event) ?? []) h(...args);
  }
}

class FakeSocket extends FakeEmitter {
  io = new FakeEmitter();
  active = true;
  emitted: string[] = [];
  emit(event: string) {
    this.emitted.push(event);
    return this;
  }
  connect = vi.fn();
  disconnect = vi.fn();
  removeAllListeners = vi.fn();
}

const fake = vi.hoisted(() => ({ socket: null as unknown, options: null as unknown }));

vi.mock("socket.io-client", () => ({
  io: (_url: string, options: unknown) => {
    fake.options = options;
    return fake.socket;
  },
}));

const { connectSocket, disconnectSocket } = await import("./socket");

let socket: FakeSocket;
let states: ConnectionState[];
let connects: boolean[];
let metrics: unknown[];
beforeEach(() => {
  socket = new FakeSocket();
  fake.socket = socket;
  states = [];
  connects = [];
  metrics = [];
  connectSocket([
    { onConnectionChange: (s) => states.push(s), onConnect: (again) => connects.push(again) },
    { events: { "system:metrics": (m: unknown) => metrics.push(m) } },
  ]);
});
afterEach(() => disconnectSocket());

describe("socket", () => {
  it("uses the Socket.IO path and joins the system room on connect", () => {
    expect(fake.options).toMatchObject({ path: "/socket.io/", reconnection: true });
    socket.fire("connect");
    expect(socket.emitted).toContain("system:join");
    expect(states).toEqual(["connected"]);
  });

  it("tracks reconnecting and reconnects after a server disconnect", () => {
    socket.fire("connect");
    socket.fire("disconnect", "io server disconnect");
    expect(states.at(-1)).toBe("reconnecting");
    expect(socket.connect).toHaveBeenCalled();
    socket.io.fire("reconnect_failed");
    expect(states.at(-1)).toBe("disconnected");
  });

  it("tells the listeners whether a connect is a reconnect", () => {
    socket.fire("connect");
    socket.fire("disconnect", "transport close");
    socket.fire("connect");
    expect(connects).toEqual([false, true]);
  });

  it("hands each event to the listener that registered it", () => {
    socket.fire("system:metrics", { gpu_utilization: 5 });
    expect(metrics).toEqual([{ gpu_utilization: 5 }]);
  });
});
