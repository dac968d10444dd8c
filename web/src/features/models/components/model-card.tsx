//! One model: what it is, where it stands (live progress), whether it fits the
//! device's memory now, and the actions its status allows. Delete, and a load
//! that unloads another model, ask for confirmation first. The loaded model can
//! be locked in memory, says when it unloads if left idle, and opens the chat.
import { useId, useState, type FormEvent } from "react";
import { Badge, type BadgeTone } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Modal } from "@/components/ui/modal";
import { Input } from "@/components/ui/input";
import { ProgressBar } from "@/components/ui/progress-bar";
import { bytesToMb, formatBytes, formatClock, formatDuration, formatMb, formatSpeed, timeLeft } from "@/lib/format";
import { cancelDownload, deleteModel, loadModel, lockModel, retryDownload, unlockModel, unloadModel } from "../api/model-actions";
import { useModelsStore } from "../stores/models-store";
import type { ModelResponse, ModelStatus } from "../types";
import { memoryFit } from "../utils/memory-fit";

const STATUS_TONE: Record<ModelStatus, BadgeTone> = {
  downloading: "info",
  ready: "neutral",
  loading: "warning",
  loaded: "success",
  error: "danger",
};

/**
 * Which actions a status allows (API.md lifecycle).
 *
 * Load needs files on disk. A local model always has its folder (`local_path`).
 * A Hub model has its files once its download completed: then it is `ready`.
 * In `error`, a failed load and a failed or cancelled download look alike on the
 * wire (`revision` is set when the download starts, `disk_size_mb` is the
 * expected size), so a Hub model in `error` offers Load only when the server
 * names its folder in `local_path`; otherwise it offers Retry, which resumes the
 * download and skips the files already on disk.
 */
export function allowedActions(model: Pick<ModelResponse, "status" | "source" | "local_path" | "locked">) {
  const s = model.status;
  const hasFiles = model.local_path != null;
  return {
    load: s === "ready" || (s === "error" && hasFiles),
    unload: s === "loaded",
    lock: s === "loaded" && !model.locked,
    unlock: s === "loaded" && model.locked,
    cancel: s === "downloading",
    retry: s === "error" && model.source === "huggingface",
    delete: s !== "loaded" && s !== "loading" && s !== "downloading",
  };
}

export interface ModelCardProps {
  model: ModelResponse;
  /** Free memory of the load device now (MiB); null when unknown. */
  freeMemoryMb?: number | null;
  /** The model in memory now, which loading this one would unload. */
  loadedModel?: ModelResponse | null;
  /** Opens the chat with this (loaded) model; no Chat button without it. */
  onChat?: (model: ModelResponse) => void;
}

export function ModelCard({ model, freeMemoryMb = null, loadedModel = null, onChat }: ModelCardProps) {
  const titleId = useId();
  const pending = useModelsStore((s) => !!s.pending[model.id]);
  const loadProgress = useModelsStore((s) => s.loadProgress[model.id]);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [confirmSwitch, setConfirmSwitch] = useState(false);
  const [retryToken, setRetryToken] = useState("");
  const actions = allowedActions(model);
  // The fit only matters where a load is offered (not on an unfinished download).
  const fit = actions.load ? memoryFit(model, freeMemoryMb, loadedModel) : null;
  const unloads = loadedModel && loadedModel.id !== model.id ? loadedModel : null;

  const onLoad = () => {
    // Loading another model unloads the one in memory: say so before doing it.
    if (unloads) setConfirmSwitch(true);
    else void loadModel(model.id);
  };
  const onRetry = async (event: FormEvent) => {
    event.preventDefault();
    const ok = await retryDownload(model.id, retryToken.trim() || undefined);
    if (ok) setRetryToken("");
  };

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
        <div className="badges model-badges">
          {model.status === "loaded" && model.locked && (
            <Badge tone="warning" data-testid="model-locked" title="Requests naming other models do not replace it.">
              <svg className="badge-icon" viewBox="0 0 16 16" width="11" height="11" aria-hidden="true" focusable="false">
                <path d="M4.5 7V5a3.5 3.5 0 0 1 7 0v2h.5a1 1 0 0 1 1 1v6a1 1 0 0 1-1 1H4a1 1 0 0 1-1-1V8a1 1 0 0 1 1-1h.5Zm1.5 0h4V5a2 2 0 0 0-4 0v2Z" fill="currentColor" />
              </svg>
              Locked
            </Badge>
          )}
          <Badge tone={STATUS_TONE[model.status]} className="badge-status" data-testid="model-status">
            {model.status}
          </Badge>
        </div>
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

      {fit && (
        <p className={`memory-fit ${fit.fits ? "fit-ok" : "fit-bad"}`} data-testid="memory-fit" data-fits={fit.fits}>
          <span aria-hidden="true">{fit.fits ? "✓" : "✕"}</span>{" "}
          {fit.fits ? "Fits" : "Does not fit"}: needs {formatMb(fit.neededMb)}, {formatMb(fit.availableMb)} free
          {fit.unloads ? ` once ${fit.unloads.name} is unloaded` : " now"}
        </p>
      )}

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

      {/* The server runs MAX_CONCURRENT_DOWNLOADS at once; this one starts when a slot frees
          (until its first bytes arrive, the row may still say queued). */}
      {model.status === "downloading" && model.queued && !model.downloaded_bytes && (
        <p className="field-hint" data-testid="download-queued">
          Waiting for a download slot: it starts by itself when another download ends.
        </p>
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

      {model.status === "loaded" && model.idle_unload_at && (
        <p className="field-hint idle-unload" data-testid="idle-unload">
          Unloads when idle at <time dateTime={model.idle_unload_at}>{formatClock(model.idle_unload_at)}</time>: each request
          moves this later.
        </p>
      )}

      {model.status === "error" && model.error_message && (
        <p className="model-error" data-testid="model-error">
          {model.error_message}
        </p>
      )}

      <div className="model-actions" role="group" aria-label={`Actions for ${model.name}`}>
        {model.status === "loaded" && onChat && (
          <Button variant="primary" size="sm" onClick={() => onChat(model)} aria-describedby={titleId}>
            Chat
          </Button>
        )}
        {actions.load && (
          <Button variant="primary" size="sm" busy={pending} onClick={onLoad} aria-describedby={titleId}>
            Load
          </Button>
        )}
        {actions.lock && (
          <Button
            variant="secondary"
            size="sm"
            busy={pending}
            onClick={() => lockModel(model.id)}
            aria-describedby={titleId}
            title="Keep this model loaded: requests naming other models do not replace it, and it is not unloaded when idle."
          >
            Lock
          </Button>
        )}
        {actions.unlock && (
          <Button variant="secondary" size="sm" busy={pending} onClick={() => unlockModel(model.id)} aria-describedby={titleId}>
            Unlock
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
          <form className="retry-form" onSubmit={onRetry}>
            <Input
              label="Hub token (optional)"
              type="password"
              autoComplete="off"
              placeholder="hf_…"
              value={retryToken}
              onChange={(e) => setRetryToken(e.target.value)}
              title="For a gated model when the server has no HF_TOKEN; used for this retry only, never stored."
              className="retry-token"
            />
            <Button type="submit" variant="secondary" size="sm" busy={pending} aria-describedby={titleId}>
              Retry
            </Button>
          </form>
        )}
        {actions.delete && (
          <Button variant="danger" size="sm" disabled={pending} onClick={() => setConfirmDelete(true)} aria-describedby={titleId}>
            Delete
          </Button>
        )}
      </div>

      <Modal
        open={confirmSwitch && unloads !== null}
        title={`Unload ${unloads?.name ?? ""} and load ${model.name}?`}
        onClose={() => setConfirmSwitch(false)}
        data-testid="confirm-switch"
        footer={
          <>
            <Button variant="secondary" onClick={() => setConfirmSwitch(false)} data-autofocus>
              Keep {unloads?.name}
            </Button>
            <Button
              variant="primary"
              busy={pending}
              onClick={() => {
                setConfirmSwitch(false);
                void loadModel(model.id);
              }}
            >
              Unload and load
            </Button>
          </>
        }
      >
        <p>
          One model is in memory at a time: {unloads?.name} is unloaded first, and requests it is serving are given up to the
          server's grace period to finish.
        </p>
        {unloads?.locked && (
          <p className="model-error" data-testid="switch-locked">
            {unloads.name} is locked in memory: the server refuses to replace it until it is unlocked on its card.
          </p>
        )}
        {fit && !fit.fits && (
          <p className="model-error">
            Even then {model.name} needs {formatMb(fit.neededMb)} and about {formatMb(fit.availableMb)} would be free: the server
            will likely refuse the load.
          </p>
        )}
      </Modal>

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
