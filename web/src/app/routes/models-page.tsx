//! The models page (the only page): forms on one side; the chat with the loaded model and the
//! registry on the other.
import { useEffect, useState } from "react";
import { ChatPanel } from "@/features/chat/components/chat-panel";
import { fetchLoadedModel, fetchModels, refreshModel } from "@/features/models/api/model-actions";
import { DownloadForm } from "@/features/models/components/download-form";
import { LocalForm } from "@/features/models/components/local-form";
import { ModelList } from "@/features/models/components/model-list";
import { selectLoadedModel, useModelsStore } from "@/features/models/stores/models-store";
import { fetchHealth } from "@/features/system/api/system-actions";
import { SystemStatus } from "@/features/system/components/system-status";
import { selectDeviceMemory, useSystemStore } from "@/features/system/stores/system-store";

export function ModelsPage() {
  // The forms are fed the free memory here, so the features stay independent.
  const freeMemoryMb = useSystemStore((s) => selectDeviceMemory(s).freeMb);
  const loadedModel = useModelsStore(selectLoadedModel);
  // Each Chat click on the loaded model's card brings the chat's message box into view and focus.
  const [chatRequest, setChatRequest] = useState(0);

  useEffect(() => {
    void fetchModels();
    void fetchLoadedModel();
    void fetchHealth();
  }, []);

  // An answer uses the model: its idle-unload time moved.
  const onAnswered = () => {
    if (!loadedModel) return;
    if (useModelsStore.getState().models.some((m) => m.id === loadedModel.id)) void refreshModel(loadedModel.id);
    else void fetchLoadedModel();
  };

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
          {loadedModel && <ChatPanel model={loadedModel} focusRequest={chatRequest} onAnswered={onAnswered} />}
          <ModelList freeMemoryMb={freeMemoryMb} onChat={() => setChatRequest((n) => n + 1)} />
        </div>
      </main>
    </>
  );
}
