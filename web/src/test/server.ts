//! The MSW server for tests and envelope helpers for handlers.
import { HttpResponse } from "msw";
import { setupServer } from "msw/node";

export const server = setupServer();

/** A success envelope. */
export function ok<T>(data: T, status = 200) {
  return HttpResponse.json({ success: true, data, error: null }, { status });
}

/** A failure envelope. */
export function fail(code: string, message: string, status: number, details: Record<string, unknown> = {}) {
  return HttpResponse.json({ success: false, data: null, error: { code, message, details } }, { status });
}
