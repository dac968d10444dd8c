//! The registry: a search box, a status filter, and one page of cards (newest
//! first) with the total the filter matches and previous/next.
import { useEffect, useRef, useState } from "react";
import { Button } from "@/components/ui/button";
import { Input } from "@/components/ui/input";
import { Select } from "@/components/ui/select";
import { showModels } from "../api/model-actions";
import { PAGE_SIZE, useModelsStore } from "../stores/models-store";
import { MODEL_STATUSES, type ModelResponse, type ModelStatus } from "../types";
import { ModelCard } from "./model-card";

/** Typing pauses this long before the search is sent. */
const SEARCH_DELAY_MS = 250;

const STATUS_OPTIONS = [
  { value: "", label: "All statuses" },
  ...MODEL_STATUSES.map((s) => ({ value: s, label: s.charAt(0).toUpperCase() + s.slice(1) })),
];

export interface ModelListProps {
  /** Free memory of the load device now (MiB), for each card's fit. */
  freeMemoryMb?: number | null;
  /** Opens the chat with the loaded model (its card's Chat button). */
  onChat?: (model: ModelResponse) => void;
}

export function ModelList({ freeMemoryMb = null, onChat }: ModelListProps) {
  const models = useModelsStore((s) => s.models);
  const total = useModelsStore((s) => s.total);
  const query = useModelsStore((s) => s.query);
  const loaded = useModelsStore((s) => s.loaded);
  const listError = useModelsStore((s) => s.listError);
  const loadedElsewhere = useModelsStore((s) => s.loadedModel);
  const [search, setSearch] = useState(query.q);
  const headingRef = useRef<HTMLHeadingElement>(null);

  /** Another page starts at the top of the list, not where the pager was. */
  const goTo = (offset: number) => {
    void showModels({ offset });
    headingRef.current?.scrollIntoView?.({ block: "start" });
  };

  useEffect(() => {
    if (search === query.q) return;
    const timer = setTimeout(() => void showModels({ q: search }), SEARCH_DELAY_MS);
    return () => clearTimeout(timer);
  }, [search, query.q]);

  const filtered = query.q.trim() !== "" || query.status !== "";
  const first = total === 0 ? 0 : query.offset + 1;
  const last = query.offset + models.length;
  // The loaded model, wherever it is listed: loading another one unloads it first.
  const loadedModel = models.find((m) => m.status === "loaded") ?? loadedElsewhere;

  return (
    <section aria-labelledby="models-heading" className="model-list-section">
      <div className="section-head">
        <h2 id="models-heading" className="card-title" ref={headingRef}>
          Models
        </h2>
        <span className="muted" aria-live="polite" data-testid="models-count">
          {loaded && !listError ? `${total.toLocaleString("en-US")} ${total === 1 ? "model" : "models"}${filtered ? " found" : ""}` : ""}
        </span>
      </div>
      <div className="list-toolbar" role="search">
        <Input
          label="Search"
          type="search"
          placeholder="Name or repo id"
          value={search}
          onChange={(e) => setSearch(e.target.value)}
          maxLength={200}
          className="list-search"
        />
        <Select
          label="Status"
          options={STATUS_OPTIONS}
          value={query.status}
          onChange={(e) => void showModels({ status: e.target.value as ModelStatus | "" })}
          className="list-status"
        />
      </div>
      {!loaded && <p className="muted">Loading models…</p>}
      {loaded && listError && models.length === 0 && (
        <p className="empty" data-testid="models-error">
          The model list could not be loaded: {listError}
        </p>
      )}
      {loaded && !listError && models.length === 0 && (
        <p className="empty" data-testid="models-empty">
          {filtered ? "No model matches this search." : "No models yet. Download one from the Hub or register a local folder."}
        </p>
      )}
      <ul className="model-list" data-testid="model-list">
        {models.map((m) => (
          <li key={m.id}>
            <ModelCard model={m} freeMemoryMb={freeMemoryMb} loadedModel={loadedModel} onChat={onChat} />
          </li>
        ))}
      </ul>
      {total > PAGE_SIZE && (
        <nav className="pager" aria-label="Pages of models">
          <Button size="sm" disabled={query.offset === 0} onClick={() => goTo(Math.max(0, query.offset - PAGE_SIZE))}>
            Previous
          </Button>
          <span className="muted" data-testid="page-range">
            {first.toLocaleString("en-US")}–{last.toLocaleString("en-US")} of {total.toLocaleString("en-US")}
          </span>
          <Button size="sm" disabled={last >= total} onClick={() => goTo(query.offset + PAGE_SIZE)}>
            Next
          </Button>
        </nav>
      )}
    </section>
  );
}
