//! The application shell: opens the live channel and renders the page with
//! its toasts. Every client route falls back to the models page.
import { useEffect } from "react";
import { Toaster } from "@/components/ui/toast";
import { connectSocket, disconnectSocket } from "@/lib/socket";
import { ModelsPage } from "./routes/models-page";

export function App() {
  useEffect(() => {
    connectSocket();
    return () => disconnectSocket();
  }, []);

  return (
    <>
      <ModelsPage />
      <Toaster />
    </>
  );
}
