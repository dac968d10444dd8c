//! What the Hub says about a repo before downloading: metadata, files, and the
//! estimated size per quantization against the device's free memory.
import { Badge } from "@/components/ui/badge";
import { Card } from "@/components/ui/card";
import { formatBytes, formatMb } from "@/lib/format";
import { QUANTIZATIONS, type ModelPreviewResponse, type Quantization } from "../types";

export interface PreviewCardProps {
  preview: ModelPreviewResponse;
  repoId: string;
  freeMemoryMb: number | null;
  selected: Quantization;
}

export function PreviewCard({ preview, repoId, freeMemoryMb, selected }: PreviewCardProps) {
  const rows = QUANTIZATIONS.filter((q) => preview.estimated_sizes[q]);
  return (
    <Card className="preview" aria-labelledby="preview-title" data-testid="preview-card">
      <header className="preview-header">
        <div>
          <h3 id="preview-title" className="preview-title">
            {preview.name}
          </h3>
          <p className="muted mono">{repoId}</p>
        </div>
        <div className="badges">
          {preview.is_gated ? <Badge tone="warning">Gated</Badge> : <Badge tone="success">Open</Badge>}
          {preview.has_access === true && <Badge tone="success">Access granted</Badge>}
          {preview.has_access === false && <Badge tone="danger">No access</Badge>}
          {preview.requires_trust_remote_code && <Badge tone="danger">Needs remote code</Badge>}
        </div>
      </header>

      <dl className="facts">
        <div>
          <dt>Parameters</dt>
          <dd data-testid="preview-params">{preview.params ?? "—"}</dd>
        </div>
        <div>
          <dt>Architecture</dt>
          <dd>{preview.architecture ?? preview.architectures?.[0] ?? "—"}</dd>
        </div>
        <div>
          <dt>License</dt>
          <dd>{preview.license ?? "—"}</dd>
        </div>
        <div>
          <dt>Gated</dt>
          <dd>{preview.is_gated ? "Yes — a token and accepted terms are needed" : "No"}</dd>
        </div>
      </dl>

      <h4 className="subheading">Estimated size</h4>
      <p className="muted table-note" data-testid="free-memory-note">
        {freeMemoryMb !== null
          ? `Memory compared with ${formatMb(freeMemoryMb)} free on the device.`
          : "The device's free memory is not known yet."}
      </p>
      <div className="table-wrap">
        <table className="table" data-testid="estimates-table">
          <caption className="sr-only">
            Estimated disk and memory per quantization, compared with {formatMb(freeMemoryMb)} of free device memory
          </caption>
          <thead>
            <tr>
              <th scope="col">Quantization</th>
              <th scope="col">Disk</th>
              <th scope="col">Memory</th>
              <th scope="col">Fits in memory?</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((q) => {
              const size = preview.estimated_sizes[q]!;
              const fits = freeMemoryMb === null ? null : size.memory_mb <= freeMemoryMb;
              return (
                <tr
                  key={q}
                  data-testid={`estimate-${q}`}
                  className={[fits === false ? "row-nofit" : "", q === selected ? "row-selected" : ""].filter(Boolean).join(" ")}
                  aria-current={q === selected ? "true" : undefined}
                >
                  <th scope="row">
                    {q}
                    {q === selected && <span className="muted"> (selected)</span>}
                  </th>
                  <td>{formatMb(size.disk_mb)}</td>
                  <td>{formatMb(size.memory_mb)}</td>
                  <td>
                    {fits === null ? (
                      <span className="muted">unknown</span>
                    ) : fits ? (
                      <Badge tone="success">fits</Badge>
                    ) : (
                      <Badge tone="danger">won't fit</Badge>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>

      <details className="files" open>
        <summary>
          Files ({preview.files.length})
        </summary>
        <ul className="file-list" data-testid="preview-files">
          {preview.files.map((f) => (
            <li key={f.path}>
              <span className="mono">{f.path}</span>
              <span className="muted">{formatBytes(f.size)}</span>
            </li>
          ))}
        </ul>
      </details>
    </Card>
  );
}
