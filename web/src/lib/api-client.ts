//! The typed HTTP client for every endpoint of the miLLM API: unwraps the
//! `{success, data, error}` envelope and throws `ApiError` on failure.
import type {
  Envelope,
  HealthResponse,
  ModelDownloadRequest,
  ModelListQuery,
  ModelPreviewRequest,
  ModelPreviewResponse,
  ModelResponse,
} from "./api-types";
import { getApiKey, notifyApiKeyNeeded } from "./api-key";

/** An API failure: the server's error code, its human message, and context. */
export class ApiError extends Error {
  /** Machine-readable code, e.g. `MODEL_NOT_FOUND`; `NETWORK_ERROR` when unreachable. */
  readonly code: string;
  /** Machine context from the server (`model_id`, `required_mb`, …). */
  readonly details: Record<string, unknown>;
  /** HTTP status; 0 when no response arrived. */
  readonly status: number;

  constructor(code: string, message: string, details: Record<string, unknown> | null | undefined, status: number) {
    super(message);
    this.name = "ApiError";
    this.code = code;
    this.details = details ?? {};
    this.status = status;
  }
}

type Method = "GET" | "POST" | "DELETE";

function isEnvelope(value: unknown): value is Envelope<unknown> {
  return typeof value === "object" && value !== null && "success" in value;
}

/** Resolves a path against the page's origin so it also works under jsdom. */
function resolve(path: string): string {
  const origin = typeof window !== "undefined" && window.location ? window.location.origin : "http://localhost";
  return new URL(path, origin).toString();
}

/** Sends one request and returns the envelope's `data`, or throws `ApiError`. */
export async function request<T>(
  method: Method,
  path: string,
  body?: unknown,
  /** Sees the response before its body is read (for headers such as `X-Total-Count`). */
  onResponse?: (response: Response) => void,
): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  const init: RequestInit = { method, headers };
  const key = getApiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }

  let response: Response;
  try {
    response = await fetch(resolve(path), init);
  } catch {
    throw new ApiError("NETWORK_ERROR", "Cannot reach the miLLM server. Check that it is running.", null, 0);
  }
  onResponse?.(response);

  let payload: unknown = null;
  const text = await response.text();
  if (text) {
    try {
      payload = JSON.parse(text);
    } catch {
      payload = null;
    }
  }

  if (isEnvelope(payload)) {
    if (payload.success) return payload.data as T;
    const error = payload.error;
    if (response.status === 401 && error?.code === "UNAUTHORIZED") notifyApiKeyNeeded();
    throw new ApiError(
      error?.code ?? "INTERNAL_ERROR",
      error?.message ?? `Request failed with status ${response.status}.`,
      error?.details,
      response.status,
    );
  }
  throw new ApiError(
    response.ok ? "INVALID_RESPONSE" : "HTTP_ERROR",
    response.ok
      ? "The server sent a response this page does not understand."
      : `Request failed with status ${response.status}.`,
    null,
    response.status,
  );
}

/** One function per endpoint of API.md. */
export const api = {
  /** GET /api/health */
  health: () => request<HealthResponse>("GET", "/api/health"),
  /** GET /api/models — newest first. */
  listModels: () => request<ModelResponse[]>("GET", "/api/models"),
  /** GET /api/models with `limit`, `offset`, `status`, `q`: one page, and how many models the filter matches. */
  listModelsPage: async (query: ModelListQuery): Promise<{ models: ModelResponse[]; total: number }> => {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
    }
    let total: number | null = null;
    const models = await request<ModelResponse[]>("GET", `/api/models?${params}`, undefined, (response) => {
      const header = response.headers.get("X-Total-Count");
      total = header === null ? null : Number(header);
    });
    return { models, total: total ?? models.length };
  },
  /** GET /api/models/{id} */
  getModel: (id: number) => request<ModelResponse>("GET", `/api/models/${id}`),
  /** POST /api/models/preview — Hub metadata without downloading. */
  previewModel: (body: ModelPreviewRequest) => request<ModelPreviewResponse>("POST", "/api/models/preview", body),
  /** POST /api/models — start a Hub download or register a local folder. */
  createModel: (body: ModelDownloadRequest) => request<ModelResponse>("POST", "/api/models", body),
  /** POST /api/models/{id}/cancel */
  cancelDownload: (id: number) => request<ModelResponse>("POST", `/api/models/${id}/cancel`),
  /** POST /api/models/{id}/retry — optional token for gated repos. */
  retryDownload: (id: number, hfToken?: string) =>
    request<ModelResponse>("POST", `/api/models/${id}/retry`, hfToken ? { hf_token: hfToken } : {}),
  /** POST /api/models/{id}/load */
  loadModel: (id: number) => request<ModelResponse>("POST", `/api/models/${id}/load`),
  /** POST /api/models/{id}/unload */
  unloadModel: (id: number) => request<ModelResponse>("POST", `/api/models/${id}/unload`),
  /** POST /api/models/{id}/lock — the loaded model stays loaded whatever requests name. */
  lockModel: (id: number) => request<ModelResponse>("POST", `/api/models/${id}/lock`),
  /** POST /api/models/{id}/unlock */
  unlockModel: (id: number) => request<ModelResponse>("POST", `/api/models/${id}/unlock`),
  /** DELETE /api/models/{id} */
  deleteModel: (id: number) => request<unknown>("DELETE", `/api/models/${id}`),
  /** GET /openapi.json (not enveloped). */
  openapi: async (): Promise<unknown> => {
    const response = await fetch(resolve("/openapi.json"));
    if (!response.ok) throw new ApiError("HTTP_ERROR", `Request failed with status ${response.status}.`, null, response.status);
    return response.json();
  },
};

/** Turns anything thrown into a message a person can act on. */
export function errorMessage(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error) return error.message;
  return "Something went wrong.";
}
