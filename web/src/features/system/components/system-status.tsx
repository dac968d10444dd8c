//! Header status: the device models load onto, its memory in use, the GPU's
//! memory, utilisation and temperature when there is a GPU (`system:metrics`
//! reports a non-zero GPU memory total), the generation speed over the last
//! minute, and the live channel's state.
import { formatMb } from "@/lib/format";
import { selectDeviceMemory, selectTokensPerSecond, useSystemStore } from "../stores/system-store";
import type { ConnectionState } from "../types";

const CONNECTION_LABEL: Record<ConnectionState, string> = {
  connecting: "Connecting…",
  connected: "Live",
  reconnecting: "Reconnecting…",
  disconnected: "Offline",
};

export function SystemStatus() {
  const connection = useSystemStore((s) => s.connection);
  const metrics = useSystemStore((s) => s.metrics);
  const health = useSystemStore((s) => s.health);
  const { device, totalMb, freeMb } = selectDeviceMemory({ metrics, health });
  const usedMb = totalMb !== null && freeMb !== null ? Math.max(0, totalMb - freeMb) : null;
  const gpuTotal = metrics?.gpu_memory_total_mb ?? 0;
  const tokensPerSecond = selectTokensPerSecond({ metrics, health });

  return (
    <div className="system-status">
      <div className="stat" data-testid="device-info">
        <span className="stat-label">Device</span>
        <span className="stat-value mono" data-testid="device-name">
          {device ?? "unknown"}
        </span>
      </div>
      <div className="stat" data-testid="memory-info">
        <span className="stat-label">Memory in use</span>
        <span className="stat-value">
          {usedMb !== null && totalMb !== null ? `${formatMb(usedMb)} / ${formatMb(totalMb)}` : "—"}
        </span>
        {usedMb !== null && totalMb ? (
          <span className="meter" aria-hidden="true">
            <span className="meter-fill" style={{ width: `${Math.min(100, (usedMb / totalMb) * 100)}%` }} />
          </span>
        ) : null}
      </div>
      {gpuTotal > 0 && (
        <div className="stat" data-testid="gpu-info">
          <span className="stat-label">GPU memory</span>
          <span className="stat-value">
            {formatMb(metrics?.gpu_memory_used_mb ?? 0)} / {formatMb(gpuTotal)}
          </span>
        </div>
      )}
      {gpuTotal > 0 && (
        <div className="stat" data-testid="gpu-utilization">
          <span className="stat-label">GPU utilisation</span>
          <span className="stat-value">{Math.round(metrics?.gpu_utilization ?? 0)}%</span>
        </div>
      )}
      {gpuTotal > 0 && (
        <div className="stat" data-testid="gpu-temperature">
          <span className="stat-label">GPU temperature</span>
          <span className="stat-value">{Math.round(metrics?.gpu_temperature ?? 0)} °C</span>
        </div>
      )}
      <div className="stat" data-testid="tokens-per-second" title="Completion tokens per second over the last minute's generations">
        <span className="stat-label">Generation</span>
        <span className="stat-value">{tokensPerSecond == null ? (tokensPerSecond === null ? "idle" : "—") : `${tokensPerSecond.toFixed(tokensPerSecond >= 100 ? 0 : 1)} tokens/s`}</span>
      </div>
      <div className={`connection connection-${connection}`} role="status" data-testid="connection-state" data-state={connection}>
        <span className="dot" aria-hidden="true" />
        <span>
          <span className="sr-only">Live updates: </span>
          {CONNECTION_LABEL[connection]}
        </span>
      </div>
    </div>
  );
}
