//! The registry: one card per model, newest first.
import { useModelsStore } from "../stores/models-store";
import { ModelCard } from "./model-card";

export function ModelList() {
  const models = useModelsStore((s) => s.models);
  const loaded = useModelsStore((s) => s.loaded);
  const listError = useModelsStore((s) => s.listError);

  return (
    <section aria-labelledby="models-heading" className="model-list-section">
      <div className="section-head">
        <h2 id="models-heading" className="card-title">
          Models
        </h2>
        <span className="muted" aria-live="polite">
          {loaded && !listError ? `${models.length} ${models.length === 1 ? "model" : "models"}` : ""}
        </span>
      </div>
      {!loaded && <p className="muted">Loading models…</p>}
      {loaded && listError && models.length === 0 && (
        <p className="empty" data-testid="models-error">
          The model list could not be loaded: {listError}
        </p>
      )}
      {loaded && !listError && models.length === 0 && (
        <p className="empty" data-testid="models-empty">
          No models yet. Download one from the Hub or register a local folder.
        </p>
      )}
      <ul className="model-list" data-testid="model-list">
        {models.map((m) => (
          <li key={m.id}>
            <ModelCard model={m} />
          </li>
        ))}
      </ul>
    </section>
  );
}
