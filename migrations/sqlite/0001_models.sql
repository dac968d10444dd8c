-- The model registry. Timestamps are RFC 3339 UTC text; sizes are MiB rounded up.
CREATE TABLE models (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('huggingface', 'local')),
    repo_id TEXT,
    revision TEXT,
    requested_revision TEXT,
    local_path TEXT UNIQUE,
    params TEXT,
    architecture TEXT,
    quantization TEXT NOT NULL CHECK (quantization IN ('FP32', 'FP16', 'Q8', 'Q4', 'Q2')),
    disk_size_mb BIGINT,
    estimated_memory_mb BIGINT,
    status TEXT NOT NULL CHECK (status IN ('downloading', 'ready', 'loading', 'loaded', 'error')),
    error_message TEXT,
    cache_path TEXT,
    config_json TEXT,
    files_json TEXT,
    parameter_count BIGINT,
    trust_remote_code BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    loaded_at TEXT,
    UNIQUE (repo_id, quantization)
);
CREATE INDEX models_status ON models (status);
