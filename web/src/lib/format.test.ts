import { formatBytes, formatClock, formatDuration, formatMb, formatSpeed, timeLeft } from "./format";

describe("format", () => {
  it("formats sizes, speeds and durations", () => {
    expect(formatMb(512)).toBe("512 MB");
    expect(formatMb(1536)).toBe("1.5 GB");
    expect(formatMb(null)).toBe("—");
    expect(formatBytes(1_048_576 * 3)).toBe("3.0 MB");
    expect(formatSpeed(1_048_576 * 2.5)).toBe("2.50 MB/s");
    expect(formatSpeed(0)).toBe("—");
    expect(formatDuration(42)).toBe("42s");
    expect(formatDuration(185)).toBe("3m 05s");
    expect(timeLeft(500, 1500, 100)).toBe(10);
    expect(timeLeft(500, 1500, 0)).toBeNull();
  });

  it("formats an instant as the local time of day, with the date when not today", () => {
    const now = new Date(2025, 5, 1, 9, 0);
    expect(formatClock(new Date(2025, 5, 1, 14, 5).toISOString(), now)).toBe("14:05");
    expect(formatClock(new Date(2025, 5, 2, 0, 30).toISOString(), now)).toBe("2025-06-02 00:30");
    expect(formatClock("not a time", now)).toBe("—");
  });
});
