//! Friendly names for the wire types, all derived from `api-schema.d.ts`, which
//! `npm run gen:api` generates from the committed `openapi.json` (a test fails
//! when it is stale). Each name is taken from a path and method of the document,
//! not from a schema's name, so it follows the contract when schemas are renamed
//! or split (a request body that becomes a `oneOf` union stays one alias).
import type { paths } from "./api-schema";

/** The JSON body of a path's request. */
type RequestBody<P extends keyof paths, M extends "get" | "post" | "delete"> = paths[P][M] extends {
  requestBody?: { content: { "application/json": infer B } };
}
  ? B
  : never;

/** The `data` of a path's 2xx envelope, without the `null` an error envelope carries. */
type Data<P extends keyof paths, M extends "get" | "post" | "delete"> = paths[P][M] extends {
  responses: infer R;
}
  ? NonNullable<
      {
        [S in keyof R & (200 | 201 | 202)]: R[S] extends { content: { "application/json": { data?: infer D } } } ? D : never;
      }[keyof R & (200 | 201 | 202)]
    >
  : never;

/** The model object (`ModelResponse`). */
export type ModelResponse = Data<"/api/models/{id}", "get">;
/** Lifecycle status of a model record. */
export type ModelStatus = ModelResponse["status"];
/** Where a model came from. */
export type ModelSource = ModelResponse["source"];
/** Quantization applied at load time. */
export type Quantization = ModelResponse["quantization"];

/** Hub metadata returned by `POST /api/models/preview`. */
export type ModelPreviewResponse = Data<"/api/models/preview", "post">;
/** Disk and memory estimate for one quantization, in MiB. */
export type EstimatedSize = ModelPreviewResponse["estimated_sizes"][Quantization];
/** One file of a Hub repo. */
export type PreviewFile = ModelPreviewResponse["files"][number];
/** Body of `POST /api/models/preview`. */
export type ModelPreviewRequest = RequestBody<"/api/models/preview", "post">;

/** Body of `POST /api/models` (a Hub download or a local folder). */
export type ModelDownloadRequest = RequestBody<"/api/models", "post">;
/** Optional body of `POST /api/models/{id}/retry`. */
export type RetryRequest = NonNullable<RequestBody<"/api/models/{id}/retry", "post">>;

/** Query of `GET /api/models`: `limit`, `offset`, `status`, `q` (all optional). */
export type ModelListQuery = NonNullable<paths["/api/models"]["get"]["parameters"]["query"]>;

/** Body of `GET /api/health`. */
export type HealthResponse = Data<"/api/health", "get">;

/** The `error` object of a failed envelope or an error event. */
export interface ApiErrorBody {
  code: string;
  message: string;
  details?: Record<string, unknown> | null;
}

/** The envelope every `/api/*` response body is wrapped in. */
export interface Envelope<T> {
  success: boolean;
  data: T | null;
  error: ApiErrorBody | null;
}

/** Every quantization, from the largest to the smallest (a `Record`, so a value the
 * document adds does not compile until it is listed here). */
const QUANTIZATION_ORDER: Record<Quantization, number> = { FP32: 0, FP16: 1, Q8: 2, Q4: 3, Q2: 4 };
export const QUANTIZATIONS = Object.keys(QUANTIZATION_ORDER) as Quantization[];

/** Every status, in lifecycle order (exhaustive, as above). */
const STATUS_ORDER: Record<ModelStatus, number> = { downloading: 0, ready: 1, loading: 2, loaded: 3, error: 4 };
export const MODEL_STATUSES = Object.keys(STATUS_ORDER) as ModelStatus[];
