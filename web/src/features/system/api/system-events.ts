//! The system feature's live events: device metrics and the channel's state.
import type { SocketListeners } from "@/lib/socket";
import { useSystemStore } from "../stores/system-store";
import type { SystemMetrics } from "../types";

export const systemSocketListeners: SocketListeners = {
  onConnectionChange: (state) => useSystemStore.getState().setConnection(state),
  events: {
    "system:metrics": (m: SystemMetrics) => useSystemStore.getState().setMetrics(m),
  },
};
