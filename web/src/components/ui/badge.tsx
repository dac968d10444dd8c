//! A small status pill.
import type { HTMLAttributes } from "react";

export type BadgeTone = "neutral" | "info" | "success" | "warning" | "danger";

export interface BadgeProps extends HTMLAttributes<HTMLSpanElement> {
  tone?: BadgeTone;
}

export function Badge({ tone = "neutral", className, children, ...rest }: BadgeProps) {
  return (
    <span className={["badge", `badge-${tone}`, className ?? ""].filter(Boolean).join(" ")} {...rest}>
      {children}
    </span>
  );
}
