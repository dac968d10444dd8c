//! One model: what it is, where it stands (live progress), and the actions
//! its status allows. Delete asks for confirmation first.
import { useId, useState } from "react";
import { Badge, type BadgeTone } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Modal } from "@/components/ui/modal";
import { ProgressBar } from "@/components/ui/progress-bar";
import { bytesToMb, formatBytes, formatDuration, formatMb, formatSpeed, timeLeft } from "@/lib/format";
import { cancelDownload, deleteModel, loadModel, retryDownload, unloadModel } from "../api/model-actions";
import { useModelsStore } from "../stores/models-store";
import type { ModelResponse, ModelStatus } from "../types";

const STATUS_TONE: Record<ModelStatus, BadgeTone> = {
  downloading: "info",
  ready: "neutral",
  loading: "warning",
  loaded: "success",
  error: "danger",
};

/** Which actions a status allows (API.md lifecycle). */
export function allowedActions(model: Pick<ModelResponse, "status" | "source" | "revision">) {
  const s = model.status;
  // A Hub model whose download never finished has nothing to load: it needs a retry.
  const hasFiles = model.source === "local" || model.revision != null;
  return {
    load: s === "ready" || (s === "error" && hasFiles),
    unload: s === "loaded",
    cancel: s === "downloading",
    retry: s === "error" && model.source === "huggingface",
    delete: s !== "loaded" && s !== "loading" && s !== "downloading",
  };
}

export function ModelCard({ model }: { model: ModelResponse }) {
  const titleId = useId();
  const pending = useModelsStore((s) => !!s.pending[model.id]);
  const loadProgress = useModelsStore((s) => s.loadProgress[model.id]);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const actions = allowedActions(model);

  const left = timeLeft(model.downloaded_bytes, model.total_bytes, model.speed_bps);
  const percent = model.download_progress ?? 0;

  return (
    <Card as="article" className={`model-card status-${model.status}`} aria-labelledby={titleId} data-testid={`model-card-${model.id}`} data-status={model.status}>
      <header className="model-header">
        <div className="model-heading">
          <h3 id={titleId} className="model-name">
            {model.name}
          </h3>
          <p className="muted mono model-origin">
            {model.source === "huggingface" ? model.repo_id : model.local_path}
          </p>
        </div>
        <Badge tone={STATUS_TONE[model.status]} className="badge-status" data-testid="model-status">
          {model.status}
        </Badge>
      </header>

      <dl className="facts facts-compact">
        <div>
          <dt>Source</dt>
          <dd>{model.source === "huggingface" ? "Hugging Face" : "Local folder"}</dd>
        </div>
        <div>
          <dt>Parameters</dt>
          <dd>{model.params ?? "—"}</dd>
        </div>
        <div>
          <dt>Quantization</dt>
          <dd>{model.quantization}</dd>
        </div>
        <div>
          <dt>Disk</dt>
          <dd>{formatMb(model.disk_size_mb)}</dd>
        </div>
        {model.estimated_memory_mb != null && model.status !== "loaded" && (
          <div>
            <dt>Est. memory</dt>
            <dd>{formatMb(model.estimated_memory_mb)}</dd>
          </div>
        )}
      </dl>

      {model.status === "downloading" && (
        <ProgressBar value={model.download_progress} label={`Download progress of ${model.name}`} data-testid="download-progress">
          <span data-testid="download-percent">{percent}%</span>
          <span>
            {formatBytes(model.downloaded_bytes)} / {formatBytes(model.total_bytes)}
          </span>
          <span data-testid="download-speed">{formatSpeed(model.speed_bps)}</span>
          <span data-testid="download-eta">{left === null ? "—" : `${formatDuration(left)} left`}</span>
        </ProgressBar>
      )}

      {model.status === "loading" && (
        <ProgressBar value={loadProgress ? loadProgress.progress : null} label={`Load progress of ${model.name}`} tone="success" data-testid="load-progress">
          <span data-testid="load-stage">{loadProgress?.stage ?? "starting"}</span>
          {loadProgress && <span>{Math.round(loadProgress.progress)}%</span>}
        </ProgressBar>
      )}

      {model.status === "loaded" && (
        <dl className="facts facts-compact loaded-facts" data-testid="loaded-info">
          <div>
            <dt>Memory</dt>
            <dd data-testid="model-memory">
              {model.memory_footprint != null ? `${bytesToMb(model.memory_footprint).toLocaleString("en-US")} MB` : formatMb(model.estimated_memory_mb)}
            </dd>
          </div>
          <div>
            <dt>Device</dt>
            <dd className="mono">{model.device ?? "—"}</dd>
          </div>
          <div>
            <dt>Dtype</dt>
            <dd className="mono">{model.dtype ?? "—"}</dd>
          </div>
          {model.num_parameters != null && (
            <div>
              <dt>Parameters (counted)</dt>
              <dd>{model.num_parameters.toLocaleString("en-US")}</dd>
            </div>
          )}
        </dl>
      )}

      {model.status === "error" && model.error_message && (
        <p className="model-error" data-testid="model-error">
          {model.error_message}
        </p>
      )}

      <div className="model-actions" role="group" aria-label={`Actions for ${model.name}`}>
        {actions.load && (
          <Button variant="primary" size="sm" busy={pending} onClick={() => loadModel(model.id)} aria-describedby={titleId}>
            Load
          </Button>
        )}
        {actions.unload && (
          <Button variant="secondary" size="sm" busy={pending} onClick={() => unloadModel(model.id)} aria-describedby={titleId}>
            Unload
          </Button>
        )}
        {actions.cancel && (
          <Button variant="secondary" size="sm" busy={pending} onClick={() => cancelDownload(model.id)} aria-describedby={titleId}>
            Cancel
          </Button>
        )}
        {actions.retry && (
          <Button variant="secondary" size="sm" busy={pending} onClick={() => retryDownload(model.id)} aria-describedby={titleId}>
            Retry
          </Button>
        )}
        {actions.delete && (
          <Button variant="danger" size="sm" disabled={pending} onClick={() => setConfirmDelete(true)} aria-describedby={titleId}>
            Delete
          </Button>
        )}
      </div>

      <Modal
        open={confirmDelete}
        title={`Delete ${model.name}?`}
        onClose={() => setConfirmDelete(false)}
        data-testid="confirm-delete"
        footer={
          <>
            <Button variant="secondary" onClick={() => setConfirmDelete(false)} data-autofocus>
              Keep
            </Button>
            <Button
              variant="danger"
              busy={pending}
              onClick={async () => {
                const ok = await deleteModel(model.id);
                if (!ok) setConfirmDelete(false);
              }}
            >
              Delete model
            </Button>
          </>
        }
      >
        <p>
          {model.source === "local"
            ? "The record is removed. The folder on disk is left as it is."
            : "The record and the files downloaded for it are removed from disk. This cannot be undone."}
        </p>
      </Modal>
    </Card>
  );
}
