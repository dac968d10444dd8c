//! Factories for wire objects used across tests.
import type { HealthResponse, ModelPreviewResponse, ModelResponse } from "@/lib/api-types";

export function makeModel(overrides: Partial<ModelResponse> = {}): ModelResponse {
  return {
    id: 1,
    name: "tiny-llama",
    source: "huggingface",
    repo_id: "test-org/tiny-llama",
    revision: "abc123",
    local_path: null,
    params: "4.2M",
    architecture: "LlamaForCausalLM",
    quantization: "Q4",
    disk_size_mb: 17,
    estimated_memory_mb: 12,
    status: "ready",
    error_message: null,
    download_progress: null,
    downloaded_bytes: null,
    total_bytes: null,
    speed_bps: null,
    created_at: "2025-01-01T00:00:00Z",
    updated_at: "2025-01-01T00:00:00Z",
    loaded_at: null,
    num_parameters: null,
    memory_footprint: null,
    device: null,
    dtype: null,
    queued: false,
    supports_inference: true,
    locked: false,
    idle_unload_at: null,
    ...overrides,
  };
}

export function makePreview(overrides: Partial<ModelPreviewResponse> = {}): ModelPreviewResponse {
  return {
    name: "tiny-llama",
    params: "4.2M",
    architecture: "LlamaForCausalLM",
    is_gated: false,
    has_access: null,
    supports_inference: true,
    requires_trust_remote_code: false,
    estimated_sizes: {
      FP32: { disk_mb: 17, memory_mb: 4000 },
      FP16: { disk_mb: 17, memory_mb: 2000 },
      Q8: { disk_mb: 17, memory_mb: 1000 },
      Q4: { disk_mb: 17, memory_mb: 500 },
      Q2: { disk_mb: 17, memory_mb: 250 },
    },
    downloads: 10,
    likes: 1,
    tags: ["llama"],
    pipeline_tag: "text-generation",
    model_type: "llama",
    architectures: ["LlamaForCausalLM"],
    license: "apache-2.0",
    language: ["en"],
    files: [
      { path: "config.json", size: 600 },
      { path: "model.safetensors", size: 17_000_000 },
    ],
    ...overrides,
  };
}

export function makeHealth(overrides: Partial<HealthResponse> = {}): HealthResponse {
  return {
    status: "ok",
    version: "0.1.0",
    database: "ok",
    database_backend: "sqlite",
    loaded_model_id: null,
    memory: { device: "cpu", total_mb: 16000, free_mb: 1500 },
    tokens_per_second: null,
    ...overrides,
  };
}
