//! The system feature's requests.
import { api } from "@/lib/api-client";
import { useSystemStore } from "../stores/system-store";

/** GET /api/health into the store; a failure is left to the connection badge. */
export async function fetchHealth(): Promise<void> {
  try {
    useSystemStore.getState().setHealth(await api.health());
  } catch {
    // The header shows the device as unknown; model requests will toast the cause.
  }
}
