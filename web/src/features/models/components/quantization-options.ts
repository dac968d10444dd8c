//! Options for the quantization select.
import { QUANTIZATIONS } from "../types";

const LABELS: Record<string, string> = {
  FP32: "FP32 — full precision",
  FP16: "FP16 — half precision",
  Q8: "Q8 — 8-bit",
  Q4: "Q4 — 4-bit (default)",
  Q2: "Q2 — 2-bit",
};

export const QUANTIZATION_OPTIONS = QUANTIZATIONS.map((q) => ({ value: q, label: LABELS[q] ?? q }));
