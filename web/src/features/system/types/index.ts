//! Types of the system feature: device metrics and the live channel's state.
export type { HealthResponse } from "@/lib/api-types";

/** `system:metrics` payload. */
export interface SystemMetrics {
  gpu_utilization: number;
  gpu_memory_used_mb: number;
  gpu_memory_total_mb: number;
  gpu_temperature: number;
  device?: string;
  memory_total_mb?: number;
  memory_free_mb?: number;
  /** Completion tokens per second over the last minute's generations; null when there were none. */
  tokens_per_second?: number | null;
}

export type { ConnectionState } from "@/lib/socket";
