//! Human formatting of sizes, speeds and durations (MB here means MiB, as in the API).

const MIB = 1024 * 1024;

/** "512 MB", "1.5 GB" from a size in MiB. */
export function formatMb(mb: number | null | undefined): string {
  if (mb === null || mb === undefined || !Number.isFinite(mb)) return "—";
  if (mb >= 1024) return `${(mb / 1024).toFixed(mb >= 102400 ? 0 : 1)} GB`;
  return `${Math.round(mb)} MB`;
}

/** "12.3 MB" from bytes. */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return "—";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < MIB) return `${(bytes / 1024).toFixed(1)} KB`;
  const mb = bytes / MIB;
  if (mb >= 1024) return `${(mb / 1024).toFixed(2)} GB`;
  return `${mb.toFixed(1)} MB`;
}

/** Bytes held, as whole MB. */
export function bytesToMb(bytes: number): number {
  return Math.round(bytes / MIB);
}

/** "3.4 MB/s" from bytes per second. */
export function formatSpeed(bps: number | null | undefined): string {
  if (!bps || bps <= 0) return "—";
  const mbps = bps / MIB;
  return `${mbps >= 100 ? mbps.toFixed(0) : mbps >= 10 ? mbps.toFixed(1) : mbps.toFixed(2)} MB/s`;
}

/** "45s", "3m 05s", "1h 02m" from seconds. */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return "—";
  const s = Math.ceil(seconds);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

/** Seconds left from remaining bytes and speed, or null when unknown. */
export function timeLeft(
  downloaded: number | null | undefined,
  total: number | null | undefined,
  bps: number | null | undefined,
): number | null {
  if (!total || !bps || bps <= 0 || downloaded == null) return null;
  return Math.max(0, (total - downloaded) / bps);
}

/** "14:05" (local time) from an RFC 3339 instant; the date too when it is not today. */
export function formatClock(iso: string, now: Date = new Date()): string {
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return "—";
  const pad = (n: number) => String(n).padStart(2, "0");
  const time = `${pad(at.getHours())}:${pad(at.getMinutes())}`;
  const sameDay = at.getFullYear() === now.getFullYear() && at.getMonth() === now.getMonth() && at.getDate() === now.getDate();
  return sameDay ? time : `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())} ${time}`;
}
