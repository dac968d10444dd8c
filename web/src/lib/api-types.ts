//! Wire types of the miLLM model-management API (shared/API.md), shared by the
//! API client, the socket layer and the features.

/** Quantization applied at load time. */
export type Quantization = "FP32" | "FP16" | "Q8" | "Q4" | "Q2";

/** Every quantization, from the largest to the smallest. */
export const QUANTIZATIONS: readonly Quantization[] = ["FP32", "FP16", "Q8", "Q4", "Q2"];

/** Lifecycle status of a model record. */
export type ModelStatus = "downloading" | "ready" | "loading" | "loaded" | "error";

/** Where a model came from. */
export type ModelSource = "huggingface" | "local";

/** The model object (`ModelResponse`). */
export interface ModelResponse {
  id: number;
  name: string;
  source: ModelSource;
  repo_id: string | null;
  revision: string | null;
  local_path: string | null;
  params: string | null;
  architecture: string | null;
  quantization: Quantization;
  disk_size_mb: number | null;
  estimated_memory_mb: number | null;
  status: ModelStatus;
  error_message: string | null;
  download_progress: number | null;
  downloaded_bytes: number | null;
  total_bytes: number | null;
  speed_bps: number | null;
  created_at: string | null;
  updated_at: string | null;
  loaded_at: string | null;
  num_parameters: number | null;
  /** Bytes actually held while loaded. */
  memory_footprint: number | null;
  device: string | null;
  dtype: string | null;
}

/** Disk and memory estimate for one quantization, in MiB. */
export interface EstimatedSize {
  disk_mb: number;
  memory_mb: number;
}

/** One file of a Hub repo. */
export interface PreviewFile {
  path: string;
  size: number | null;
}

/** Hub metadata returned by `POST /api/models/preview`. */
export interface ModelPreviewResponse {
  name: string;
  params: string | null;
  architecture: string | null;
  is_gated: boolean;
  has_access?: boolean | null;
  requires_trust_remote_code: boolean;
  estimated_sizes: Partial<Record<Quantization, EstimatedSize>>;
  downloads?: number | null;
  likes?: number | null;
  tags?: string[] | null;
  pipeline_tag?: string | null;
  model_type?: string | null;
  architectures?: string[] | null;
  license?: string | null;
  language?: string | string[] | null;
  files: PreviewFile[];
}

/** Body of `POST /api/models/preview`. */
export interface ModelPreviewRequest {
  repo_id: string;
  hf_token?: string;
  revision?: string;
}

/** Body of `POST /api/models`. */
export interface ModelDownloadRequest {
  source: ModelSource;
  repo_id?: string;
  revision?: string;
  local_path?: string;
  quantization?: Quantization;
  trust_remote_code?: boolean;
  hf_token?: string;
  custom_name?: string;
}

/** Body of `GET /api/health`. */
export interface HealthResponse {
  status: string;
  version: string;
  database: string;
  loaded_model_id: number | null;
  memory: { device: string; total_mb: number; free_mb: number };
}

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
