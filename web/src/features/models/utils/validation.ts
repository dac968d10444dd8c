//! Client-side checks that mirror the server's rules (API.md), so a person
//! sees the problem before a request is sent. The server stays the authority.

const PART = /^[A-Za-z0-9._-]+$/;

/** Why `value` is not a Hub repo id (`owner/name`), or null when it is. */
export function validateRepoId(value: string): string | null {
  const v = value.trim();
  if (!v) return "Enter a Hub repo id, e.g. HuggingFaceTB/SmolLM2-135M.";
  const parts = v.split("/");
  if (parts.length !== 2) return "Use the form owner/name, with exactly one slash.";
  for (const [label, part] of [
    ["Owner", parts[0]],
    ["Name", parts[1]],
  ] as const) {
    if (part.length === 0) return `${label} is empty: use the form owner/name.`;
    if (part.length > 96) return `${label} is longer than 96 characters.`;
    if (!PART.test(part)) return `${label} may only contain letters, digits, "-", "_" and ".".`;
    if (/^[-.]|[-.]$/.test(part)) return `${label} must not start or end with "-" or ".".`;
    if (part.includes("--") || part.includes("..")) return `${label} must not contain "--" or "..".`;
  }
  return null;
}

/** Why `value` is not an absolute folder path, or null when it is. */
export function validateLocalPath(value: string): string | null {
  const v = value.trim();
  if (!v) return "Enter the absolute path of a model folder.";
  if (!v.startsWith("/") && !/^[A-Za-z]:[\\/]/.test(v)) return "The path must be absolute, e.g. /models/my-llama.";
  return null;
}

/** Why a display name is not acceptable, or null. */
export function validateCustomName(value: string): string | null {
  return value.trim().length > 100 ? "The display name may be at most 100 characters." : null;
}
