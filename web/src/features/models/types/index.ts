//! Types of the models feature: the API's wire types plus UI-only state.
export type {
  ModelDownloadRequest,
  ModelPreviewResponse,
  ModelResponse,
  ModelStatus,
  Quantization,
  EstimatedSize,
  PreviewFile,
} from "@/lib/api-types";
export { MODEL_STATUSES, QUANTIZATIONS } from "@/lib/api-types";

/** `model:download:progress` payload. */
export interface DownloadProgressEvent {
  modelId: number;
  progress: number;
  downloadedBytes: number;
  totalBytes: number;
  speedBps: number;
}

/** `model:download:complete` payload. */
export interface DownloadCompleteEvent {
  modelId: number;
  localPath?: string;
}

/** `model:download:error` / `model:load:error` payload. */
export interface ModelErrorEvent {
  modelId: number;
  error: { code: string; message: string; details?: Record<string, unknown> | null };
}

/** `model:load:progress` payload. */
export interface LoadProgressEvent {
  modelId: number;
  stage: string;
  progress: number;
}

/** `model:load:complete` payload. */
export interface LoadCompleteEvent {
  modelId: number;
  memoryUsedMb?: number;
}

/** `model:unload:complete` payload. */
export interface UnloadCompleteEvent {
  modelId: number;
}

/** Live load progress of one model. */
export interface LoadProgress {
  stage: string;
  progress: number;
}
