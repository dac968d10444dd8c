//! The one Socket.IO connection: joins the system room, tracks the connection
//! state, and hands each live event to the listeners the features register
//! (`lib/` never imports a feature; `app/` wires the features' listeners in).
import { io, type Socket } from "socket.io-client";
import { getApiKey, notifyApiKeyNeeded } from "./api-key";

/** State of the Socket.IO connection. */
export type ConnectionState = "connecting" | "connected" | "reconnecting" | "disconnected";

/** What one feature wants from the live channel; each part is optional. */
export interface SocketListeners {
  /** Event name → handler of its payload (typed by the feature that owns the event). */
  events?: Record<string, (payload: never) => void>;
  /** Every connect; `reconnected` is true after the first, when events may have been missed. */
  onConnect?: (reconnected: boolean) => void;
  /** The connection's state changed. */
  onConnectionChange?: (state: ConnectionState) => void;
}

let socket: Socket | null = null;

/** Opens the connection once, feeding `listeners`; later calls return the same socket. */
export function connectSocket(listeners: readonly SocketListeners[] = []): Socket {
  if (socket) return socket;
  const setConnection = (state: ConnectionState) => {
    for (const l of listeners) l.onConnectionChange?.(state);
  };
  const s = io("/", {
    path: "/socket.io/",
    reconnection: true,
    reconnectionDelay: 500,
    reconnectionDelayMax: 5000,
    // Read at every (re)connection, so a key given later is used.
    auth: (cb) => cb({ token: getApiKey() ?? undefined }),
  });
  socket = s;
  let connectedBefore = false;

  s.on("connect", () => {
    setConnection("connected");
    s.emit("system:join");
    for (const l of listeners) l.onConnect?.(connectedBefore);
    connectedBefore = true;
  });
  s.on("disconnect", (reason) => {
    if (reason === "io client disconnect") {
      setConnection("disconnected");
      return;
    }
    setConnection("reconnecting");
    // The server closed us on purpose: socket.io does not retry that by itself.
    if (reason === "io server disconnect") s.connect();
  });
  s.on("connect_error", (error: Error) => {
    if (error?.message?.startsWith("UNAUTHORIZED")) notifyApiKeyNeeded();
    setConnection(s.active ? "reconnecting" : "disconnected");
  });
  s.io.on("reconnect_attempt", () => setConnection("reconnecting"));
  s.io.on("reconnect_failed", () => setConnection("disconnected"));

  for (const l of listeners) {
    for (const [event, handler] of Object.entries(l.events ?? {})) {
      s.on(event, handler as (payload: unknown) => void);
    }
  }

  return s;
}

/** Closes the connection (tests, page teardown). */
export function disconnectSocket(): void {
  socket?.disconnect();
  socket?.removeAllListeners();
  socket = null;
}
