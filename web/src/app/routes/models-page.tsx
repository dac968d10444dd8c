//! The models page (the only page): forms on one side, the registry on the other.
import { useEffect } from "react";
import { fetchLoadedModel, fetchModels } from "@/features/models/api/model-actions";
import { DownloadForm } from "@/features/models/components/download-form";
import { LocalForm } from "@/features/models/components/local-form";
import { ModelList } from "@/features/models/components/model-list";
import { fetchHealth } from "@/features/system/api/system-actions";
import { SystemStatus } from "@/features/system/components/system-status";
import { selectDeviceMemory, useSystemStore } from "@/features/system/stores/system-store";

export function ModelsPage() {
  // The forms are fed the free memory here, so the features stay independent.
  const freeMemoryMb = useSystemStore((s) => selectDeviceMemory(s).freeMb);

  useEffect(() => {
    void fetchModels();
    void fetchLoadedModel();
    void fetchHealth();
  }, []);

  return (
    <>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="app-header">
        <div className="brand">
          <span className="logo" aria-hidden="true">
            ◆
          </span>
          <h1 className="app-name">miLLM</h1>
          <span className="muted tagline">model manager</span>
        </div>
        <SystemStatus />
      </header>
      <main id="main" className="layout" tabIndex={-1}>
        <div className="column forms">
          <DownloadForm freeMemoryMb={freeMemoryMb} />
          <LocalForm />
        </div>
        <div className="column">
          <ModelList freeMemoryMb={freeMemoryMb} />
        </div>
      </main>
    </>
  );
}
