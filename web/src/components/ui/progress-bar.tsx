//! An accessible progress bar (role="progressbar") with a visible label.
import type { ReactNode } from "react";

export interface ProgressBarProps {
  /** 0–100; null for indeterminate. */
  value: number | null | undefined;
  /** Accessible name, e.g. "Download progress". */
  label: string;
  /** Text beside the bar (percent, speed…). */
  children?: ReactNode;
  tone?: "info" | "success";
  "data-testid"?: string;
}

export function ProgressBar({ value, label, children, tone = "info", ...rest }: ProgressBarProps) {
  const clamped = value == null ? null : Math.max(0, Math.min(100, value));
  return (
    <div className="progress" data-testid={rest["data-testid"]}>
      <div
        className={`progress-track progress-${tone}${clamped === null ? " progress-indeterminate" : ""}`}
        role="progressbar"
        aria-label={label}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={clamped ?? undefined}
      >
        <div className="progress-fill" style={{ width: clamped === null ? "30%" : `${clamped}%` }} />
      </div>
      {children && <div className="progress-meta">{children}</div>}
    </div>
  );
}
