//! The application shell: opens the live channel with each feature's
//! listeners and renders the page with its toasts. Every client route falls back to the models page.
import { useEffect } from "react";
import { Toaster } from "@/components/ui/toast";
import { ApiKeyPrompt } from "@/features/auth/components/api-key-prompt";
import { modelSocketListeners } from "@/features/models/api/model-events";
import { systemSocketListeners } from "@/features/system/api/system-events";
import { connectSocket, disconnectSocket } from "@/lib/socket";
import { ModelsPage } from "./routes/models-page";

export function App() {
  useEffect(() => {
    connectSocket([modelSocketListeners, systemSocketListeners]);
    return () => disconnectSocket();
  }, []);

  return (
    <>
      <ModelsPage />
      <Toaster />
      {/* With the key kept, start over: every request and the socket then carry it. */}
      <ApiKeyPrompt onSaved={() => window.location.reload()} />
    </>
  );
}
