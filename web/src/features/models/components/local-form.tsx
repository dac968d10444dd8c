//! Register a model folder that is already on the server's disk.
import { useState, type FormEvent } from "react";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Input } from "@/components/ui/input";
import { Select } from "@/components/ui/select";
import { createModel } from "../api/model-actions";
import type { Quantization } from "../types";
import { validateCustomName, validateLocalPath } from "../utils/validation";
import { QUANTIZATION_OPTIONS } from "./quantization-options";

export function LocalForm() {
  const [path, setPath] = useState("");
  const [touched, setTouched] = useState(false);
  const [quantization, setQuantization] = useState<Quantization>("Q4");
  const [customName, setCustomName] = useState("");
  const [busy, setBusy] = useState(false);

  const pathError = touched ? validateLocalPath(path) : null;
  const nameError = validateCustomName(customName);

  async function onSubmit(event: FormEvent) {
    event.preventDefault();
    setTouched(true);
    if (validateLocalPath(path) !== null || nameError) return;
    setBusy(true);
    const model = await createModel({
      source: "local",
      local_path: path.trim(),
      quantization,
      ...(customName.trim() ? { custom_name: customName.trim() } : {}),
    });
    setBusy(false);
    if (model) {
      setPath("");
      setTouched(false);
      setCustomName("");
    }
  }

  return (
    <Card aria-labelledby="local-heading" className="form-card">
      <h2 id="local-heading" className="card-title">
        Register local folder
      </h2>
      <form onSubmit={onSubmit} noValidate aria-label="Register local folder" data-testid="local-form">
        <div className="form-grid">
          <Input
            className="span-2"
            label="Folder path"
            name="local_path"
            placeholder="/models/my-llama"
            autoComplete="off"
            spellCheck={false}
            value={path}
            onChange={(e) => setPath(e.target.value)}
            onBlur={() => path && setTouched(true)}
            error={pathError}
            hint="Absolute path on the server, holding config.json and safetensors weights"
            required
          />
          <Select
            label="Quantization"
            name="quantization"
            value={quantization}
            onChange={(e) => setQuantization(e.target.value as Quantization)}
            options={QUANTIZATION_OPTIONS}
          />
          <Input
            label="Display name (optional)"
            name="custom_name"
            value={customName}
            maxLength={100}
            onChange={(e) => setCustomName(e.target.value)}
            error={nameError}
          />
        </div>
        <div className="form-actions">
          <Button type="submit" variant="primary" busy={busy}>
            Register
          </Button>
        </div>
      </form>
    </Card>
  );
}
