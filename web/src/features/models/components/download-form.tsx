//! Download a model from the Hub: repo id with inline validation, options,
//! a preview of what the Hub has, then the download itself.
import { useState, type FormEvent } from "react";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Input } from "@/components/ui/input";
import { Select } from "@/components/ui/select";
import { createModel, previewModel } from "../api/model-actions";
import type { ModelPreviewResponse, Quantization } from "../types";
import { validateCustomName, validateRepoId } from "../utils/validation";
import { PreviewCard } from "./preview-card";
import { QUANTIZATION_OPTIONS } from "./quantization-options";

export interface DownloadFormProps {
  /** Free memory of the device models load onto, in MiB; null when unknown. */
  freeMemoryMb: number | null;
}

export function DownloadForm({ freeMemoryMb }: DownloadFormProps) {
  const [repoId, setRepoId] = useState("");
  const [touched, setTouched] = useState(false);
  const [quantization, setQuantization] = useState<Quantization>("Q4");
  // The token lives only in this form's state: never in a store or localStorage.
  const [hfToken, setHfToken] = useState("");
  const [customName, setCustomName] = useState("");
  const [revision, setRevision] = useState("main");
  const [preview, setPreview] = useState<{ repoId: string; data: ModelPreviewResponse } | null>(null);
  const [busy, setBusy] = useState<"preview" | "download" | null>(null);

  const repoError = touched ? validateRepoId(repoId) : null;
  const nameError = validateCustomName(customName);

  function check(): boolean {
    setTouched(true);
    return validateRepoId(repoId) === null && nameError === null;
  }

  async function onPreview() {
    if (!check()) return;
    setBusy("preview");
    const data = await previewModel(repoId.trim(), revision.trim() || "main", hfToken);
    setBusy(null);
    setPreview(data ? { repoId: repoId.trim(), data } : null);
  }

  async function onSubmit(event: FormEvent) {
    event.preventDefault();
    if (!check()) return;
    setBusy("download");
    const model = await createModel({
      source: "huggingface",
      repo_id: repoId.trim(),
      revision: revision.trim() || "main",
      quantization,
      ...(hfToken ? { hf_token: hfToken } : {}),
      ...(customName.trim() ? { custom_name: customName.trim() } : {}),
    });
    setBusy(null);
    if (model) {
      setRepoId("");
      setTouched(false);
      setHfToken("");
      setCustomName("");
      setRevision("main");
      setPreview(null);
    }
  }

  return (
    <Card aria-labelledby="download-heading" className="form-card">
      <h2 id="download-heading" className="card-title">
        Download from Hugging Face
      </h2>
      <form onSubmit={onSubmit} noValidate aria-label="Download from Hugging Face" data-testid="download-form">
        <div className="form-grid">
          <Input
            className="span-2"
            label="Repository"
            name="repo_id"
            placeholder="owner/name"
            autoComplete="off"
            spellCheck={false}
            value={repoId}
            onChange={(e) => {
              setRepoId(e.target.value);
              if (preview && e.target.value.trim() !== preview.repoId) setPreview(null);
            }}
            onBlur={() => repoId && setTouched(true)}
            error={repoError}
            hint="The Hub id, e.g. HuggingFaceTB/SmolLM2-135M"
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
            label="Revision"
            name="revision"
            value={revision}
            autoComplete="off"
            spellCheck={false}
            onChange={(e) => setRevision(e.target.value)}
          />
          <Input
            label="Access token (optional)"
            name="hf_token"
            type="password"
            autoComplete="off"
            value={hfToken}
            onChange={(e) => setHfToken(e.target.value)}
            hint="For gated repos. Sent with this request only; never saved."
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
          <Button variant="secondary" onClick={onPreview} busy={busy === "preview"} disabled={busy !== null}>
            Preview
          </Button>
          <Button type="submit" variant="primary" busy={busy === "download"} disabled={busy !== null}>
            Download
          </Button>
        </div>
      </form>
      {preview && (
        <PreviewCard preview={preview.data} repoId={preview.repoId} freeMemoryMb={freeMemoryMb} selected={quantization} />
      )}
    </Card>
  );
}
