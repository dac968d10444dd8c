//! Device metrics (health and `system:metrics`) and the live channel's state.
import { create } from "zustand";
import type { ConnectionState, HealthResponse, SystemMetrics } from "../types";

interface SystemState {
  connection: ConnectionState;
  metrics: SystemMetrics | null;
  health: HealthResponse | null;
  setConnection: (connection: ConnectionState) => void;
  setMetrics: (metrics: SystemMetrics) => void;
  setHealth: (health: HealthResponse) => void;
  reset: () => void;
}

const initial = { connection: "connecting" as ConnectionState, metrics: null, health: null };

export const useSystemStore = create<SystemState>()((set) => ({
  ...initial,
  setConnection: (connection) => set({ connection }),
  setMetrics: (metrics) => set({ metrics }),
  setHealth: (health) => set({ health }),
  reset: () => set({ ...initial }),
}));

/** The device models load onto, as metrics or health report it. */
export interface DeviceMemory {
  device: string | null;
  totalMb: number | null;
  freeMb: number | null;
}

/** Latest metrics win over the health snapshot. */
export function selectDeviceMemory(state: Pick<SystemState, "metrics" | "health">): DeviceMemory {
  const m = state.metrics;
  const h = state.health?.memory;
  return {
    device: m?.device ?? h?.device ?? null,
    totalMb: m?.memory_total_mb ?? h?.total_mb ?? null,
    freeMb: m?.memory_free_mb ?? h?.free_mb ?? null,
  };
}

/**
 * Generation speed over the last minute: the latest metrics, else the health snapshot; null
 * when nothing was generated, undefined when the server reports no figure.
 */
export function selectTokensPerSecond(state: Pick<SystemState, "metrics" | "health">): number | null | undefined {
  if (state.metrics && state.metrics.tokens_per_second !== undefined) return state.metrics.tokens_per_second;
  return state.health?.tokens_per_second;
}
