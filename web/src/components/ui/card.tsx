//! A bordered panel; `as` picks the element (section, article…).
import type { HTMLAttributes, ReactNode, Ref } from "react";

export interface CardProps extends HTMLAttributes<HTMLElement> {
  as?: "section" | "article" | "div";
  children: ReactNode;
  ref?: Ref<HTMLElement>;
}

export function Card({ as: Tag = "section", className, children, ref, ...rest }: CardProps) {
  return (
    <Tag className={["card", className ?? ""].filter(Boolean).join(" ")} ref={ref as Ref<HTMLDivElement>} {...rest}>
      {children}
    </Tag>
  );
}
