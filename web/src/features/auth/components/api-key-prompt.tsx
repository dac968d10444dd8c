//! Asks for the server's API key when the API answers 401: kept for this browser session, or
//! remembered in this browser when the user ticks the box. The page loads without a key; only
//! the API and the live channel need it.
import { useId, useState, useSyncExternalStore, type FormEvent } from "react";
import { Button } from "@/components/ui/button";
import { Input } from "@/components/ui/input";
import { Modal } from "@/components/ui/modal";
import { isApiKeyNeeded, setApiKey, subscribeApiKey } from "@/lib/api-key";

export interface ApiKeyPromptProps {
  /** Called once the key is kept: start over with it (requests, the socket). */
  onSaved: () => void;
}

export function ApiKeyPrompt({ onSaved }: ApiKeyPromptProps) {
  const needed = useSyncExternalStore(subscribeApiKey, isApiKeyNeeded, isApiKeyNeeded);
  const [key, setKey] = useState("");
  const [remember, setRemember] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const formId = useId();
  const rememberId = useId();

  function submit(event: FormEvent) {
    event.preventDefault();
    if (!key.trim()) {
      setError("Enter the key the server was started with (MILLM_API_KEY).");
      return;
    }
    setApiKey(key, remember);
    setKey("");
    setError(null);
    onSaved();
  }

  return (
    <Modal
      open={needed}
      title="This server needs its API key"
      // The page cannot work without it: the prompt stays until a key is given.
      onClose={() => undefined}
      data-testid="api-key-prompt"
      footer={
        <Button type="submit" form={formId} variant="primary">
          Unlock
        </Button>
      }
    >
      <form id={formId} onSubmit={submit} noValidate>
        <p>
          The server was started with <code>MILLM_API_KEY</code>. Enter that key to use this page; it is
          sent with every request to this server only.
        </p>
        <Input
          label="API key"
          type="password"
          autoComplete="current-password"
          value={key}
          onChange={(e) => setKey(e.target.value)}
          error={error}
          data-autofocus
        />
        <div className="field">
          <label htmlFor={rememberId}>
            <input
              id={rememberId}
              type="checkbox"
              checked={remember}
              onChange={(e) => setRemember(e.target.checked)}
            />{" "}
            Remember on this browser
          </label>
        </div>
      </form>
    </Modal>
  );
}
