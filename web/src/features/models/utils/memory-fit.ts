//! Whether a model's estimated memory fits the load device now. Loading another
//! model unloads the one in memory first, so its memory counts as free.
import { bytesToMb } from "@/lib/format";
import type { ModelResponse } from "../types";

/** What a load would find: the estimate, the memory it may use, and the model it would unload. */
export interface MemoryFit {
  /** MiB the load will take. */
  neededMb: number;
  /** MiB free now plus what unloading the current model gives back. */
  availableMb: number;
  fits: boolean;
  /** The loaded model this load would unload first, if any. */
  unloads: ModelResponse | null;
}

/** MiB a loaded model holds: the bytes counted after its load, else its estimate. */
export function heldMb(model: ModelResponse): number {
  if (model.memory_footprint != null) return bytesToMb(model.memory_footprint);
  return model.estimated_memory_mb ?? 0;
}

/**
 * The fit of `model` against `freeMb` (free device memory now), or null when
 * either is unknown or the model is already in memory.
 */
export function memoryFit(model: ModelResponse, freeMb: number | null, loaded: ModelResponse | null): MemoryFit | null {
  if (model.estimated_memory_mb == null || freeMb == null) return null;
  if (model.status === "loaded" || model.status === "loading") return null;
  const unloads = loaded && loaded.id !== model.id ? loaded : null;
  const availableMb = freeMb + (unloads ? heldMb(unloads) : 0);
  return { neededMb: model.estimated_memory_mb, availableMb, fits: model.estimated_memory_mb <= availableMb, unloads };
}
