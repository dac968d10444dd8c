//! A bordered panel; `as` picks the element (section, article…).
import type { HTMLAttributes, ReactNode } from "react";

export interface CardProps extends HTMLAttributes<HTMLElement> {
  as?: "section" | "article" | "div";
  children: ReactNode;
}

export function Card({ as: Tag = "section", className, children, ...rest }: CardProps) {
  return (
    <Tag className={["card", className ?? ""].filter(Boolean).join(" ")} {...rest}>
      {children}
    </Tag>
  );
}
